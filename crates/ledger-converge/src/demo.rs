//! The deterministic engine of `examples/engine_run`, the tests and the benchmark:
//! converge-core's own `SeedSuggestor` and `ReactOnceSuggestor`, then a suggestor that adds one
//! step per cycle until there are `steps` (sleeping `step_ms` per cycle, so a run can be
//! interrupted), and optionally a release that a human must approve (HITL).

use converge_core::gates::TimeoutPolicy;
use converge_core::suggestors::{ReactOnceSuggestor, SeedSuggestor};
use converge_core::{
    AgentEffect, Budget, Context, ContextKey, Engine, EngineHitlPolicy, ProposedFact, Suggestor,
    TextPayload,
};
use std::time::Duration;

/// Id of the fact a human approves in the HITL variant.
pub const RELEASE_ID: &str = "release";

/// One step per cycle under `Strategies`: `step-000001`, `step-000002`, … up to `steps`.
#[derive(Debug)]
pub struct StepSuggestor {
    pub steps: u64,
    pub step: Duration,
}

fn step_id(n: u64) -> String {
    format!("step-{n:06}")
}

#[async_trait::async_trait]
impl Suggestor for StepSuggestor {
    fn name(&self) -> &str {
        "StepSuggestor"
    }

    fn dependencies(&self) -> &[ContextKey] {
        &[ContextKey::Hypotheses, ContextKey::Strategies]
    }

    fn accepts(&self, ctx: &dyn Context) -> bool {
        ctx.has(ContextKey::Hypotheses) && (ctx.count(ContextKey::Strategies) as u64) < self.steps
    }

    async fn execute(&self, ctx: &dyn Context) -> AgentEffect {
        if !self.step.is_zero() {
            tokio::time::sleep(self.step).await;
        }
        let n = ctx.count(ContextKey::Strategies) as u64 + 1;
        AgentEffect::with_proposal(ProposedFact::new(
            ContextKey::Strategies,
            step_id(n),
            TextPayload::new(format!("step {n} of {}", self.steps)),
            self.provenance(),
        ))
    }
}

/// Once every step is in, proposes the release (`Evaluations`), which the HITL policy gates.
#[derive(Debug)]
pub struct ReleaseSuggestor {
    pub steps: u64,
}

#[async_trait::async_trait]
impl Suggestor for ReleaseSuggestor {
    fn name(&self) -> &str {
        "ReleaseSuggestor"
    }

    fn dependencies(&self) -> &[ContextKey] {
        &[ContextKey::Strategies]
    }

    fn accepts(&self, ctx: &dyn Context) -> bool {
        let rejected = format!("hitl-rejected:{RELEASE_ID}");
        ctx.count(ContextKey::Strategies) as u64 >= self.steps
            && !ctx
                .get(ContextKey::Evaluations)
                .iter()
                .any(|f| f.id().as_str() == RELEASE_ID)
            && !ctx
                .get(ContextKey::Diagnostic)
                .iter()
                .any(|f| f.id().as_str() == rejected)
    }

    async fn execute(&self, _ctx: &dyn Context) -> AgentEffect {
        AgentEffect::with_proposal(ProposedFact::new(
            ContextKey::Evaluations,
            RELEASE_ID,
            TextPayload::new(format!("release after {} steps", self.steps)),
            self.provenance(),
        ))
    }
}

/// The engine: seed, hypothesis, `steps` steps (about `steps + 3` cycles), and with `hitl` a
/// release gated for a human.
pub fn engine(steps: u64, step_ms: u64, hitl: bool) -> Engine {
    let mut e = Engine::with_budget(Budget {
        max_cycles: u32::try_from(steps + 20).unwrap_or(u32::MAX),
        max_facts: u32::try_from(steps + 100).unwrap_or(u32::MAX),
    });
    e.register_suggestor(SeedSuggestor::new("seed", "goal: ship the ledger"));
    e.register_suggestor(ReactOnceSuggestor::new(
        "hypothesis",
        "the ledger keeps the run across crashes",
    ));
    e.register_suggestor(StepSuggestor {
        steps,
        step: Duration::from_millis(step_ms),
    });
    if hitl {
        e.register_suggestor(ReleaseSuggestor { steps });
        e.set_hitl_policy(EngineHitlPolicy {
            confidence_threshold: None,
            gated_keys: vec![ContextKey::Evaluations],
            timeout: TimeoutPolicy::default(),
        });
    }
    e
}
