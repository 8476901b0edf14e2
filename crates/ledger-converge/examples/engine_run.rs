//! A deterministic converge-core engine whose context lives in the ledger.
//!
//! ```text
//! engine_run --addr URL --scope S [--cycles N] [--step-ms MS]
//!            [--hitl] [--decide approve|reject --by NAME]
//! ```
//!
//! Loads scope `S` from the ledger (resuming whatever it holds), runs the engine of
//! `ledger_converge::demo` (about N cycles, sleeping MS per cycle), streams every fact as it is
//! merged, saves the result and prints one JSON object as its last line:
//! `{"scope", "context", "converged", "cycles", "facts", "merkle_root", "resumed_from_facts"}`.
//!
//! With `--hitl` a release proposal waits for a human: the run saves the pause and prints
//! `"paused": true` with the `gate_id`; `--decide approve --by alice` (in any later process)
//! records the decision and resumes from the ledger.

use converge_core::gates::GateDecision;
use converge_core::{ContextState, RunResult};
use ledger_converge::{BridgeOptions, LedgerContextStore, StoreOptions, demo};
use std::process::ExitCode;

struct Args {
    addr: String,
    scope: String,
    cycles: u64,
    step_ms: u64,
    hitl: bool,
    decide: Option<String>,
    by: String,
}

fn usage() -> ExitCode {
    eprintln!(
        "usage: engine_run --addr URL --scope S [--cycles N] [--step-ms MS] [--hitl] [--decide approve|reject --by NAME]"
    );
    ExitCode::from(2)
}

fn parse() -> Option<Args> {
    let mut a = Args {
        addr: String::new(),
        scope: String::new(),
        cycles: 10,
        step_ms: 0,
        hitl: false,
        decide: None,
        by: "operator".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--addr" => a.addr = it.next()?,
            "--scope" => a.scope = it.next()?,
            "--cycles" => a.cycles = it.next()?.parse().ok()?,
            "--step-ms" => a.step_ms = it.next()?.parse().ok()?,
            "--hitl" => a.hitl = true,
            "--decide" => a.decide = Some(it.next()?),
            "--by" => a.by = it.next()?,
            _ => return None,
        }
    }
    (!a.addr.is_empty() && !a.scope.is_empty()).then_some(a)
}

fn summary(
    store: &LedgerContextStore,
    args: &Args,
    state: &ContextState,
    converged: bool,
    cycles: u32,
    resumed_from_facts: u64,
) -> serde_json::Value {
    let snap = state.snapshot();
    serde_json::json!({
        "scope": args.scope,
        "context": store.context_id(&args.scope),
        "converged": converged,
        "cycles": cycles,
        "facts": ledger_converge::mapping::fact_count(state),
        "merkle_root": snap.merkle_root().to_hex(),
        "resumed_from_facts": resumed_from_facts,
    })
}

async fn run(args: Args) -> Result<serde_json::Value, Box<dyn std::error::Error>> {
    let store = LedgerContextStore::connect(&[args.addr.as_str()], StoreOptions::default()).await?;
    let mut engine = demo::engine(args.cycles, args.step_ms, args.hitl);

    if args.hitl
        && let Some(pause) = store.pending_pause(&args.scope).await?
    {
        let decision = match args.decide.as_deref() {
            Some("approve") => {
                let d = GateDecision::approve(pause.request.gate_id.clone(), args.by.clone());
                store.record_decision(&args.scope, &d).await?;
                Some(d)
            }
            Some("reject") => {
                let d = GateDecision::reject(
                    pause.request.gate_id.clone(),
                    args.by.clone(),
                    Some("rejected from engine_run".into()),
                );
                store.record_decision(&args.scope, &d).await?;
                Some(d)
            }
            Some(other) => return Err(format!("--decide {other}: approve or reject").into()),
            None => store.recorded_decision(&args.scope).await?,
        };
        let Some(decision) = decision else {
            let loaded = store.load(&args.scope).await?;
            let (state, facts) = loaded.map(|l| (l.state, l.facts)).unwrap_or_default();
            let mut s = summary(&store, &args, &state, false, pause.cycle, facts);
            s["paused"] = true.into();
            s["gate_id"] = pause.request.gate_id.to_string().into();
            return Ok(s);
        };
        let facts_before = store.load(&args.scope).await?.map_or(0, |l| l.facts);
        let bridge = store.streaming(&args.scope, None, BridgeOptions::default());
        engine.set_streaming(bridge.clone());
        let result = store.resume(&args.scope, &mut engine, decision).await?;
        return finish(&store, &args, result, facts_before).await;
    }

    let loaded = store.load(&args.scope).await?;
    let resumed_from_facts = loaded.as_ref().map_or(0, |l| l.facts);
    let state = loaded.map(|l| l.state).unwrap_or_default();
    let bridge = store.streaming(
        &args.scope,
        Some(&state),
        BridgeOptions {
            correlation: Some(sanitize(&args.scope)),
            ..BridgeOptions::default()
        },
    );
    engine.set_streaming(bridge.clone());
    engine.set_event_observer(bridge.clone());
    let result = if args.hitl {
        engine.run_with_hitl(state).await
    } else {
        RunResult::Complete(engine.run(state).await)
    };
    let out = finish(&store, &args, result, resumed_from_facts).await;
    bridge.shutdown().await;
    out
}

async fn finish(
    store: &LedgerContextStore,
    args: &Args,
    result: RunResult,
    resumed_from_facts: u64,
) -> Result<serde_json::Value, Box<dyn std::error::Error>> {
    match result {
        RunResult::Complete(r) => {
            let r = r?;
            store.save(&args.scope, &r.context).await?;
            Ok(summary(
                store,
                args,
                &r.context,
                r.converged,
                r.cycles,
                resumed_from_facts,
            ))
        }
        RunResult::HitlPause(p) => {
            let (record, _) = store.save_pause(&args.scope, &p).await?;
            let mut s = summary(store, args, &p.context, false, p.cycle, resumed_from_facts);
            s["paused"] = true.into();
            s["gate_id"] = record.request.gate_id.to_string().into();
            Ok(s)
        }
    }
}

/// A correlation id from a scope: converge-experience allows `[A-Za-z0-9._-]`.
fn sanitize(scope: &str) -> String {
    scope
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn main() -> ExitCode {
    let Some(args) = parse() else {
        return usage();
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(run(args)) {
        Ok(v) => {
            println!("{v}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("engine_run: {e}");
            ExitCode::FAILURE
        }
    }
}
