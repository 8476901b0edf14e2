//! The behaviours of converge-experience's in-memory `ExperienceStore`, as one suite run
//! against it and against the ledger-backed store (a real node process).

mod support;

use converge_core::governed_artifact::{GovernedArtifactState, LifecycleEvent};
use converge_core::{
    ArtifactKind, BudgetResource, DecisionStep, EventQuery, ExperienceEvent,
    ExperienceEventEnvelope, ExperienceEventKind, ExperienceEventObserver, ExperienceRecord,
    ExperienceStore, OverrideTarget, ReplayTrace, TimeRange, Timestamp, TraceLinkId,
    UserExperienceEvent, UserExperienceEventEnvelope,
};
use converge_experience::{InMemoryExperienceStore, StoreObserver, summarize_events};
use std::collections::HashMap;
use std::sync::Arc;

fn outcome(chain: &str) -> ExperienceEvent {
    ExperienceEvent::OutcomeRecorded {
        chain_id: chain.into(),
        step: DecisionStep::Planning,
        passed: true,
        stop_reason: None,
        latency_ms: Some(3),
        tokens: None,
        cost_microdollars: None,
        backend: None,
        metadata: HashMap::from([("k".to_string(), "v".to_string())]),
    }
}

fn budget(chain: &str) -> ExperienceEvent {
    ExperienceEvent::BudgetExceeded {
        chain_id: chain.into(),
        resource: BudgetResource::Tokens,
        limit: "1".into(),
        observed: None,
    }
}

fn promoted(id: &str) -> ExperienceEvent {
    ExperienceEvent::FactPromoted {
        proposal_id: id.into(),
        fact_id: id.into(),
        promoted_by: "engine".into(),
        reason: "test".into(),
        requires_human: false,
    }
}

fn user_override(reason: &str) -> UserExperienceEvent {
    UserExperienceEvent::UserOverrideIssued {
        target: OverrideTarget::Constraint("budget".into()),
        actor: "operator-1".into(),
        policy_snapshot_hash: None,
        reason: reason.into(),
    }
}

fn env(id: &str, e: ExperienceEvent) -> ExperienceEventEnvelope {
    ExperienceEventEnvelope::new(id, e)
}

fn ids(v: &[ExperienceEventEnvelope]) -> Vec<String> {
    v.iter().map(|e| e.event_id.to_string()).collect()
}

fn all(s: &dyn ExperienceStore) -> Vec<ExperienceEventEnvelope> {
    s.query_events(&EventQuery::default()).unwrap()
}

fn appended_events_come_back_in_append_order(s: &dyn ExperienceStore) {
    for i in 0..12 {
        let e = match i % 3 {
            0 => outcome("c"),
            1 => budget("c"),
            _ => promoted(&format!("f{i}")),
        };
        let mut e = env(&format!("evt-{i}"), e);
        // Spread over tenants and correlations: several ledger contexts.
        if i % 2 == 0 {
            e = e.with_tenant("tenant-a");
        }
        if i % 4 == 0 {
            e = e.with_correlation("corr-1");
        }
        s.append_event(e).unwrap();
    }
    let got = all(s);
    assert_eq!(
        ids(&got),
        (0..12).map(|i| format!("evt-{i}")).collect::<Vec<_>>()
    );
    // The envelope comes back whole.
    assert_eq!(got[0].tenant_id.as_deref(), Some("tenant-a"));
    assert_eq!(got[0].correlation_id.as_deref(), Some("corr-1"));
    let ExperienceEvent::OutcomeRecorded { metadata, .. } = &got[0].event else {
        panic!("outcome")
    };
    assert_eq!(metadata.get("k").map(String::as_str), Some("v"));
}

fn tenants_are_isolated(s: &dyn ExperienceStore) {
    for i in 0..3 {
        s.append_event(env(&format!("a-{i}"), outcome("c")).with_tenant("tenant-alpha"))
            .unwrap();
    }
    for i in 0..2 {
        s.append_event(env(&format!("b-{i}"), outcome("c")).with_tenant("tenant-beta"))
            .unwrap();
    }
    s.append_event(env("none", outcome("c"))).unwrap();
    let q = |t: &str| EventQuery {
        tenant_id: Some(t.into()),
        ..Default::default()
    };
    let a = s.query_events(&q("tenant-alpha")).unwrap();
    let b = s.query_events(&q("tenant-beta")).unwrap();
    assert_eq!(ids(&a), ["a-0", "a-1", "a-2"]);
    assert_eq!(ids(&b), ["b-0", "b-1"]);
    assert!(s.query_events(&q("tenant-gamma")).unwrap().is_empty());
    assert_eq!(all(s).len(), 6);
}

fn kinds_filter_by_the_set_given(s: &dyn ExperienceStore) {
    s.append_event(env("o1", outcome("c"))).unwrap();
    s.append_event(env("b1", budget("c"))).unwrap();
    s.append_event(env("p1", promoted("x"))).unwrap();
    s.append_event(env("o2", outcome("c")).with_tenant("t"))
        .unwrap();
    let q = |k: Vec<ExperienceEventKind>| EventQuery {
        kinds: k,
        ..Default::default()
    };
    assert_eq!(
        ids(&s
            .query_events(&q(vec![ExperienceEventKind::OutcomeRecorded]))
            .unwrap()),
        ["o1", "o2"]
    );
    assert_eq!(
        ids(&s
            .query_events(&q(vec![
                ExperienceEventKind::BudgetExceeded,
                ExperienceEventKind::FactPromoted
            ]))
            .unwrap()),
        ["b1", "p1"]
    );
    assert!(
        s.query_events(&q(vec![ExperienceEventKind::RecallExecuted]))
            .unwrap()
            .is_empty()
    );
}

fn limits_are_honoured(s: &dyn ExperienceStore) {
    for i in 0..7 {
        s.append_event(env(&format!("e{i}"), outcome("c"))).unwrap();
    }
    let q = EventQuery {
        limit: Some(3),
        ..Default::default()
    };
    assert_eq!(ids(&s.query_events(&q).unwrap()), ["e0", "e1", "e2"]);
    let q0 = EventQuery {
        limit: Some(0),
        ..Default::default()
    };
    assert!(s.query_events(&q0).unwrap().is_empty());
}

fn correlation_and_chain_ids_filter(s: &dyn ExperienceStore) {
    s.append_event(env("t1", outcome("chain-a")).with_correlation("corr-target"))
        .unwrap();
    s.append_event(env("t2", budget("chain-b")).with_correlation("corr-target"))
        .unwrap();
    s.append_event(env("o1", outcome("chain-a")).with_correlation("corr-other"))
        .unwrap();
    s.append_event(env("p1", promoted("f")).with_correlation("corr-target"))
        .unwrap();
    let corr = EventQuery {
        correlation_id: Some("corr-target".into()),
        ..Default::default()
    };
    assert_eq!(ids(&s.query_events(&corr).unwrap()), ["t1", "t2", "p1"]);
    let chain = EventQuery {
        chain_id: Some("chain-a".into()),
        ..Default::default()
    };
    assert_eq!(ids(&s.query_events(&chain).unwrap()), ["t1", "o1"]);
    // FactPromoted has no chain id: never matches a chain filter.
    let both = EventQuery {
        chain_id: Some("chain-a".into()),
        correlation_id: Some("corr-target".into()),
        ..Default::default()
    };
    assert_eq!(ids(&s.query_events(&both).unwrap()), ["t1"]);
}

fn time_ranges_are_inclusive(s: &dyn ExperienceStore) {
    for (id, ts) in [
        ("e1", "2026-01-01T00:00:00Z"),
        ("e2", "2026-01-02T00:00:00Z"),
        ("e3", "2026-01-03T00:00:00Z"),
    ] {
        s.append_event(env(id, outcome("c")).with_timestamp(ts))
            .unwrap();
    }
    let q = |start: Option<&str>, end: Option<&str>| EventQuery {
        time_range: Some(TimeRange {
            start: start.map(Timestamp::from),
            end: end.map(Timestamp::from),
        }),
        ..Default::default()
    };
    assert_eq!(
        ids(&s
            .query_events(&q(
                Some("2026-01-02T00:00:00Z"),
                Some("2026-01-03T00:00:00Z")
            ))
            .unwrap()),
        ["e2", "e3"]
    );
    assert_eq!(
        ids(&s
            .query_events(&q(None, Some("2026-01-01T00:00:00Z")))
            .unwrap()),
        ["e1"]
    );
    assert!(
        s.query_events(&q(Some("9999-01-01T00:00:00Z"), None))
            .unwrap()
            .is_empty()
    );
}

fn trace_links_are_recorded_and_found_by_id(s: &dyn ExperienceStore) {
    let trace = ReplayTrace::Remote(converge_core::RemoteReplayTrace {
        provider_name: "anthropic".into(),
        provider_model_id: "claude".into(),
        request_fingerprint: "req".into(),
        response_fingerprint: "resp".into(),
        temperature: 0.0,
        top_p: 1.0,
        max_tokens: 512,
        provider_metadata: HashMap::new(),
        retried: false,
        retry_reasons: vec![],
        replayability: converge_core::Replayability::BestEffort,
    });
    s.append_event(env(
        "evt-trace",
        ExperienceEvent::ReplayTraceRecorded {
            trace_link_id: "trace-1".into(),
            trace_link: trace.clone(),
        },
    ))
    .unwrap();
    let got = s
        .get_trace_link(&TraceLinkId::new("trace-1"))
        .unwrap()
        .expect("recorded");
    assert_eq!(got.replayability(), trace.replayability());
    assert!(
        s.get_trace_link(&TraceLinkId::new("trace-2"))
            .unwrap()
            .is_none()
    );
}

fn malformed_ids_are_refused_at_the_write_boundary(s: &dyn ExperienceStore) {
    assert!(s.append_event(env("evt'; DROP", outcome("c"))).is_err());
    assert!(
        s.append_event(env("ok", outcome("c")).with_tenant("ten ant"))
            .is_err()
    );
    assert!(
        s.append_user_event(UserExperienceEventEnvelope::new(
            "bad id!",
            user_override("r")
        ))
        .is_err()
    );
    assert!(all(s).is_empty());
}

fn user_events_merge_with_engine_events_in_records(s: &dyn ExperienceStore) {
    s.append_event(env("evt-engine-1", outcome("a")).with_timestamp("2026-01-01T00:00:01Z"))
        .unwrap();
    s.append_user_event(
        UserExperienceEventEnvelope::new("user-1", user_override("tighten"))
            .with_tenant("tenant-a")
            .with_correlation("corr-7")
            .with_timestamp("2026-01-01T00:00:00Z"),
    )
    .unwrap();
    let recs = s.query_records(&EventQuery::default()).unwrap();
    assert_eq!(recs.len(), 2);
    // Ordered by occurrence: the user event happened first.
    assert!(matches!(&recs[0], ExperienceRecord::User(u) if u.event_id == "user-1"));
    assert!(matches!(&recs[1], ExperienceRecord::Engine(e) if e.event_id == "evt-engine-1"));
    // Engine queries do not see user events.
    assert_eq!(all(s).len(), 1);
    let by_tenant = EventQuery {
        tenant_id: Some("tenant-a".into()),
        ..Default::default()
    };
    let recs = s.query_records(&by_tenant).unwrap();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].correlation_id().map(|c| c.as_str()), Some("corr-7"));
    let by_corr = EventQuery {
        correlation_id: Some("corr-8".into()),
        ..Default::default()
    };
    assert!(s.query_records(&by_corr).unwrap().is_empty());
    for i in 0..4 {
        s.append_user_event(UserExperienceEventEnvelope::new(
            format!("u{i}"),
            user_override("r"),
        ))
        .unwrap();
    }
    let limited = EventQuery {
        limit: Some(3),
        ..Default::default()
    };
    assert_eq!(s.query_records(&limited).unwrap().len(), 3);
}

fn artifact_transitions_are_events(s: &dyn ExperienceStore) {
    s.write_artifact_state_transition(
        &"adapter-1".into(),
        ArtifactKind::Adapter,
        LifecycleEvent::new(
            GovernedArtifactState::Draft,
            GovernedArtifactState::Approved,
            "alice",
            "reviewed",
        ),
    )
    .unwrap();
    let q = EventQuery {
        kinds: vec![ExperienceEventKind::ArtifactStateTransitioned],
        ..Default::default()
    };
    let got = s.query_events(&q).unwrap();
    assert_eq!(got.len(), 1);
    assert!(matches!(
        &got[0].event,
        ExperienceEvent::ArtifactStateTransitioned { artifact_id, .. } if artifact_id.as_str() == "adapter-1"
    ));
}

fn the_store_observer_bridge_appends_engine_events<S: ExperienceStore + 'static>(s: Arc<S>) {
    let observer = StoreObserver::new(Arc::clone(&s));
    observer.on_event(&outcome("chain-a"));
    observer.on_event(&budget("chain-b"));
    let stored = s.query_events(&EventQuery::default()).unwrap();
    assert_eq!(stored.len(), 2);
    let summary = summarize_events(&stored);
    assert_eq!(summary.outcome_recorded, 1);
    assert_eq!(summary.budget_exceeded, 1);
}

/// One behaviour of the suite.
type Case = (&'static str, fn(&dyn ExperienceStore));

/// Every behaviour, each on a fresh store from `fresh`.
fn suite<S: ExperienceStore + 'static>(fresh: impl Fn() -> S) {
    let cases: &[Case] = &[
        ("append order", appended_events_come_back_in_append_order),
        ("tenants", tenants_are_isolated),
        ("kinds", kinds_filter_by_the_set_given),
        ("limits", limits_are_honoured),
        ("correlation and chain", correlation_and_chain_ids_filter),
        ("time ranges", time_ranges_are_inclusive),
        ("trace links", trace_links_are_recorded_and_found_by_id),
        (
            "malformed ids",
            malformed_ids_are_refused_at_the_write_boundary,
        ),
        (
            "user events",
            user_events_merge_with_engine_events_in_records,
        ),
        ("artifacts", artifact_transitions_are_events),
    ];
    for (name, case) in cases {
        eprintln!("case: {name}");
        case(&fresh());
    }
    the_store_observer_bridge_appends_engine_events(Arc::new(fresh()));
}

#[test]
fn the_in_memory_reference_store_passes_the_suite() {
    suite(InMemoryExperienceStore::new);
}

#[test]
fn the_ledger_backed_store_passes_the_same_suite() {
    let (node, _dir) = support::single_node();
    let n = std::sync::atomic::AtomicU64::new(0);
    suite(|| {
        // A namespace per case: a fresh store on the same node.
        let ns = format!(
            "suite-{}/",
            n.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        ledger_converge::LedgerExperienceStore::connect(
            &[node.url.as_str()],
            &ns,
            Default::default(),
        )
        .expect("connects")
    });
}
