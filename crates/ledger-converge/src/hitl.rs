//! Human-in-the-loop pauses that outlive the process.
//!
//! converge-core's `HitlPause` keeps most of what `Engine::resume` needs private (the gated
//! proposal, the suggestor id, the effects not merged yet, the Lamport time) and has no
//! constructor or serde form, so no other process can rebuild one. What is persisted instead:
//!
//! 1. the pause's context, saved like any context (its facts, and the gated proposal, which
//!    converge-core stages in `HitlPause::context` before pausing);
//! 2. a `hitl/pause` entry: the public `GateRequest`, the cycle, the gate events, and the key
//!    and id of the gated proposal;
//! 3. the human's `GateDecision`, as a `hitl/decision` entry, from any process, at any time.
//!
//! To resume, a process loads the context **without** the gated proposal, runs its engine (the
//! same suggestors and HITL policy) until it pauses again — converge-core proposes the same
//! proposal and stops at a gate for it, now with a real `HitlPause` — checks that the gate is for
//! the recorded proposal, and calls `Engine::resume` with the human's verdict (re-addressed to
//! the replayed gate's id, which names the replay's cycle). A `hitl/resumed` entry then marks
//! the recorded gate as done. This relies on the suggestors being deterministic up to the gate,
//! as the engine's own replay guarantees do; a replay that does not reach the gate is an error,
//! never a silent approval.

use crate::context_store::LedgerContextStore;
use crate::mapping::{self, content_idempotency_key};
use crate::{Error, context_store::SaveReport};
use converge_core::gates::{GateDecision, GateEvent, GateRequest};
use converge_core::{ContextKey, Engine, HitlPause, RunResult};
use ledger_core::Metadata;
use serde::{Deserialize, Serialize};

/// Ledger key of pause records.
pub const PAUSE_KEY: &str = "hitl/pause";
/// Ledger key of decisions.
pub const DECISION_KEY: &str = "hitl/decision";
/// Ledger key of the marks that a recorded gate was resumed.
pub const RESUMED_KEY: &str = "hitl/resumed";
const META_GATE_ID: &str = "converge.gate_id";

/// A pause as persisted.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PauseRecord {
    /// Encoding version (1).
    pub format: u32,
    pub request: GateRequest,
    pub cycle: u32,
    /// Ledger key (`mapping::ledger_key`) of the gated proposal's `ContextKey`.
    pub proposal_key: String,
    pub proposal_id: String,
    pub gate_events: Vec<GateEvent>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct ResumedRecord {
    gate_id: String,
    replayed_gate_id: String,
}

impl LedgerContextStore {
    /// Persists `pause` under `scope`: its context (saved, flushing the bridge) and the pause
    /// record. Another process can then [`Self::resume`] it.
    pub async fn save_pause(
        &self,
        scope: &str,
        pause: &HitlPause,
    ) -> Result<(PauseRecord, SaveReport), Error> {
        let report = self.save(scope, &pause.context).await?;
        let proposal_id = pause.request.proposal_id.to_string();
        let key = pause
            .context
            .snapshot()
            .proposals()
            .iter()
            .find_map(|(k, ps)| {
                ps.iter()
                    .any(|p| p.id().as_str() == proposal_id)
                    .then_some(*k)
            })
            .ok_or_else(|| Error::Hitl {
                scope: scope.to_owned(),
                reason: format!("the pause's context does not stage proposal {proposal_id:?}"),
            })?;
        let record = PauseRecord {
            format: 1,
            request: pause.request.clone(),
            cycle: pause.cycle,
            proposal_key: mapping::ledger_key(key).to_owned(),
            proposal_id,
            gate_events: pause.gate_events.clone(),
        };
        let payload = crate::error::encode_json("pause", &record)?;
        let mut m = Metadata::new();
        m.insert(META_GATE_ID.into(), record.request.gate_id.to_string());
        let idem = content_idempotency_key("hp1", &payload);
        self.append_record(scope, PAUSE_KEY, payload, m, idem)
            .await?;
        Ok((record, report))
    }

    /// The last pause of `scope` not resumed yet.
    pub async fn pending_pause(&self, scope: &str) -> Result<Option<PauseRecord>, Error> {
        let ctx = self.context_id(scope);
        let mut pending: Option<PauseRecord> = None;
        for e in self.other_entries(scope).await? {
            match e.key.as_str() {
                PAUSE_KEY => {
                    pending =
                        Some(
                            serde_json::from_slice(&e.payload).map_err(|err| Error::Decode {
                                context: ctx.clone(),
                                sequence: e.sequence,
                                reason: format!("pause: {err}"),
                            })?,
                        )
                }
                RESUMED_KEY => {
                    let gate = e.metadata.get(META_GATE_ID);
                    if pending
                        .as_ref()
                        .is_some_and(|p| Some(&p.request.gate_id.to_string()) == gate)
                    {
                        pending = None;
                    }
                }
                _ => {}
            }
        }
        Ok(pending)
    }

    /// Records a human's decision for the pending gate of `scope` (from any process).
    pub async fn record_decision(&self, scope: &str, decision: &GateDecision) -> Result<(), Error> {
        let pause = self
            .pending_pause(scope)
            .await?
            .ok_or_else(|| Error::Hitl {
                scope: scope.to_owned(),
                reason: "no pause is pending".into(),
            })?;
        if pause.request.gate_id != decision.gate_id {
            return Err(Error::Hitl {
                scope: scope.to_owned(),
                reason: format!(
                    "the decision is for gate {}, the pending gate is {}",
                    decision.gate_id.as_str(),
                    pause.request.gate_id.as_str()
                ),
            });
        }
        let payload = crate::error::encode_json("decision", decision)?;
        let mut m = Metadata::new();
        m.insert(META_GATE_ID.into(), decision.gate_id.to_string());
        let idem = content_idempotency_key("hd1", &payload);
        self.append_record(scope, DECISION_KEY, payload, m, idem)
            .await
    }

    /// The decision recorded for the pending gate of `scope`, if any.
    pub async fn recorded_decision(&self, scope: &str) -> Result<Option<GateDecision>, Error> {
        let Some(pause) = self.pending_pause(scope).await? else {
            return Ok(None);
        };
        let ctx = self.context_id(scope);
        let gate = pause.request.gate_id.to_string();
        let mut found = None;
        for e in self.other_entries(scope).await? {
            if e.key == DECISION_KEY && e.metadata.get(META_GATE_ID) == Some(&gate) {
                found = Some(
                    serde_json::from_slice(&e.payload).map_err(|err| Error::Decode {
                        context: ctx.clone(),
                        sequence: e.sequence,
                        reason: format!("decision: {err}"),
                    })?,
                );
            }
        }
        Ok(found)
    }

    /// Resumes the pending pause of `scope` with `decision` on `engine` (configured as the
    /// paused one was: same suggestors, same HITL policy): replays to the gate from the
    /// ledger, then `Engine::resume`. Returns what the engine returned (save its context, or
    /// its next pause, as usual).
    pub async fn resume(
        &self,
        scope: &str,
        engine: &mut Engine,
        decision: GateDecision,
    ) -> Result<RunResult, Error> {
        let hitl = |reason: String| Error::Hitl {
            scope: scope.to_owned(),
            reason,
        };
        let pause = self
            .pending_pause(scope)
            .await?
            .ok_or_else(|| hitl("no pause is pending".into()))?;
        if pause.request.gate_id != decision.gate_id {
            return Err(hitl(format!(
                "the decision is for gate {}, the pending gate is {}",
                decision.gate_id.as_str(),
                pause.request.gate_id.as_str()
            )));
        }
        let key = mapping::context_key(&pause.proposal_key)
            .ok_or_else(|| hitl(format!("unknown key {:?}", pause.proposal_key)))?;
        let exclude: [(ContextKey, String); 1] = [(key, pause.proposal_id.clone())];
        let state = self
            .load_excluding(scope, &exclude)
            .await?
            .map(|l| l.state)
            .unwrap_or_default();
        let replayed = match engine.run_with_hitl(state).await {
            RunResult::HitlPause(p) => p,
            RunResult::Complete(r) => {
                return Err(hitl(format!(
                    "the replay did not reach gate {} (the engine completed: {})",
                    pause.request.gate_id.as_str(),
                    match r {
                        Ok(c) => format!("converged after {} cycles", c.cycles),
                        Err(e) => e.to_string(),
                    }
                )));
            }
        };
        if replayed.request.proposal_id.as_str() != pause.proposal_id {
            return Err(hitl(format!(
                "the replay paused for proposal {}, the recorded gate is for {}",
                replayed.request.proposal_id.as_str(),
                pause.proposal_id
            )));
        }
        let record = ResumedRecord {
            gate_id: pause.request.gate_id.to_string(),
            replayed_gate_id: replayed.request.gate_id.to_string(),
        };
        let payload = crate::error::encode_json("resume mark", &record)?;
        let mut m = Metadata::new();
        m.insert(META_GATE_ID.into(), record.gate_id.clone());
        let idem = content_idempotency_key("hr1", &payload);
        let readdressed = GateDecision {
            gate_id: replayed.request.gate_id.clone(),
            ..decision
        };
        let result = engine.resume(*replayed, readdressed).await;
        self.append_record(scope, RESUMED_KEY, payload, m, idem)
            .await?;
        Ok(result)
    }
}
