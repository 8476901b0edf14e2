//! Anti-entropy digests: two sessions talk through the compact encoding (every message is
//! encoded, measured and decoded), and the differences they find are checked against the naive
//! set difference.
//!
//! The figures (bytes, messages, build and compare times for 100,000 contexts) are printed by
//! `measure_100k_contexts`:
//! `cargo nextest run --release --workspace -E 'package(ledger-replication) & test(measure_)' --no-capture`.

use ledger_core::Hash;
use ledger_core::hash::sha256;
use ledger_replication::digest::{MAX_DEPTH, token};
use ledger_replication::{
    Difference, DifferenceKind, Digest, DigestItem, DigestMessage, DigestPart, DigestSession,
    DigestSettings, Epoch, Voter,
};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

fn root_of(context: &str, size: u64) -> Hash {
    let mut input = context.as_bytes().to_vec();
    input.extend_from_slice(&size.to_be_bytes());
    sha256(&input)
}

fn item(context: &str, size: u64, epoch: u64) -> DigestItem {
    DigestItem::new(
        context,
        size,
        root_of(context, size),
        (epoch > 0).then(|| Epoch::new(epoch, Voter::new("node-a", 0x5eed))),
    )
}

fn contexts(n: usize) -> Vec<DigestItem> {
    (0..n)
        .map(|i| {
            item(
                &format!("tenant-{}/context-{i:06}", i % 97),
                1 + i as u64 % 5000,
                3,
            )
        })
        .collect()
}

/// What one conversation did.
#[derive(Debug)]
struct Outcome {
    /// The differences as the initiator saw them.
    a: Vec<Difference>,
    /// ... and as the responder saw them.
    b: Vec<Difference>,
    messages: u64,
    bytes: u64,
    largest: u64,
    /// Turns of the initiator after its first message (its messages = round trips).
    round_trips: u64,
    elapsed: Duration,
}

/// Runs a conversation to its end, every message through `encode`/`decode`.
fn exchange(a: Digest, b: Digest, sa: DigestSettings, sb: DigestSettings) -> Outcome {
    let started = Instant::now();
    let (mut ia, first) = DigestSession::initiator(a, sa);
    let mut rb = DigestSession::responder(b, sb);
    let (mut messages, mut bytes, mut largest) = (0u64, 0u64, 0u64);
    let mut in_flight = Some(first);
    let mut to_b = true;
    while let Some(message) = in_flight.take() {
        let encoded = message.encode();
        assert_eq!(encoded.len(), message.wire_len());
        messages += 1;
        bytes += encoded.len() as u64;
        largest = largest.max(encoded.len() as u64);
        assert!(messages < 1_000_000, "the conversation does not end");
        let decoded = DigestMessage::decode(&encoded).expect("decodes");
        assert_eq!(decoded, message);
        let side = if to_b { &mut rb } else { &mut ia };
        in_flight = side
            .on_message(decoded)
            .expect("a well-formed conversation");
        to_b = !to_b;
    }
    let elapsed = started.elapsed();
    assert!(ia.is_finished() && rb.is_finished(), "both sides finish");
    let (sa_stats, sb_stats) = (ia.stats(), rb.stats());
    assert_eq!(sa_stats.bytes_sent + sb_stats.bytes_sent, bytes);
    assert_eq!(sa_stats.bytes_sent, sb_stats.bytes_received);
    assert_eq!(sb_stats.bytes_sent, sa_stats.bytes_received);
    Outcome {
        round_trips: sa_stats.messages_sent - 1,
        a: ia.into_differences(),
        b: rb.into_differences(),
        messages,
        bytes,
        largest,
        elapsed,
    }
}

fn default_exchange(a: &[DigestItem], b: &[DigestItem]) -> Outcome {
    let s = DigestSettings::default();
    exchange(
        Digest::new(a.to_vec()).unwrap(),
        Digest::new(b.to_vec()).unwrap(),
        s,
        s,
    )
}

/// The naive set difference by context, from `a`'s point of view.
fn naive(a: &[DigestItem], b: &[DigestItem]) -> Vec<Difference> {
    let mut all: BTreeMap<String, (Option<DigestItem>, Option<DigestItem>)> = BTreeMap::new();
    for i in a {
        all.entry(i.context.clone()).or_default().0 = Some(i.clone());
    }
    for i in b {
        all.entry(i.context.clone()).or_default().1 = Some(i.clone());
    }
    all.into_iter()
        .filter(|(_, (l, r))| l != r)
        .map(|(context, (local, remote))| Difference {
            context,
            local,
            remote,
        })
        .collect()
}

fn mirrored(ds: &[Difference]) -> Vec<Difference> {
    ds.iter()
        .map(|d| Difference {
            context: d.context.clone(),
            local: d.remote.clone(),
            remote: d.local.clone(),
        })
        .collect()
}

fn check(a: &[DigestItem], b: &[DigestItem], o: &Outcome) {
    assert_eq!(o.a, naive(a, b), "initiator's differences");
    assert_eq!(o.b, mirrored(&o.a), "the responder sees the same, mirrored");
}

#[test]
fn equal_sets_exchange_one_hash() {
    let items = contexts(100_000);
    let o = default_exchange(&items, &items);
    assert!(o.a.is_empty() && o.b.is_empty());
    // The root range (1 + 1 + 1 + 1 + 1 + 32 + 3 bytes) and Done.
    assert_eq!(o.messages, 2);
    assert_eq!(o.bytes, 41);
    // Empty against empty: the same.
    let o = default_exchange(&[], &[]);
    assert!(o.a.is_empty());
    assert_eq!(o.messages, 2);
}

#[test]
fn one_lagging_context_among_100k_costs_log_n_bytes() {
    let a = contexts(100_000);
    let mut b = a.clone();
    let lagging = 31_337;
    b[lagging] = item(&a[lagging].context, a[lagging].size - 1, 3);
    let o = default_exchange(&a, &b);
    check(&a, &b, &o);
    assert_eq!(o.a.len(), 1);
    assert_eq!(o.a[0].context, a[lagging].context);
    assert_eq!(o.a[0].kind(), DifferenceKind::Differs);
    assert_eq!(o.a[0].local.as_ref(), Some(&a[lagging]));
    assert_eq!(o.a[0].remote.as_ref(), Some(&b[lagging]));
    // log16(100,000) ≈ 4.2 levels of 16 hashes of ~40 bytes, plus a leaf range's items.
    assert!(o.bytes < 4 * 1024, "{} bytes", o.bytes);
    assert!(o.round_trips <= 6, "{} round trips", o.round_trips);
}

#[test]
fn the_cost_of_one_difference_grows_logarithmically() {
    let mut costs = Vec::new();
    for n in [100, 1_600, 25_600] {
        let a = contexts(n);
        let mut b = a.clone();
        b[n / 2].size += 1;
        let o = default_exchange(&a, &b);
        check(&a, &b, &o);
        assert_eq!(o.a.len(), 1);
        costs.push(o.bytes);
    }
    // Each 16-fold growth adds about one level (16 range hashes, ~650 bytes), never a factor.
    for w in costs.windows(2) {
        assert!(w[1] < w[0] + 1_000, "{costs:?}");
    }
}

#[test]
fn contexts_missing_on_either_side() {
    let all = contexts(5_000);
    // a lacks every 7th context, b every 11th.
    let a: Vec<_> = all
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 7 != 0)
        .map(|(_, x)| x.clone())
        .collect();
    let b: Vec<_> = all
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 11 != 0)
        .map(|(_, x)| x.clone())
        .collect();
    let o = default_exchange(&a, &b);
    check(&a, &b, &o);
    let missing_locally =
        o.a.iter()
            .filter(|d| d.kind() == DifferenceKind::MissingLocally)
            .count();
    let missing_remotely =
        o.a.iter()
            .filter(|d| d.kind() == DifferenceKind::MissingRemotely)
            .count();
    let both = (0..5_000).filter(|i| i % 77 == 0).count();
    assert_eq!(
        missing_locally,
        (0..5_000).filter(|i| i % 7 == 0).count() - both
    );
    assert_eq!(
        missing_remotely,
        (0..5_000).filter(|i| i % 11 == 0).count() - both
    );
}

#[test]
fn several_differences_of_every_kind() {
    let mut a = contexts(20_000);
    let mut b = a.clone();
    for i in (0..20_000).step_by(997) {
        b[i].size += 10; // b ahead
    }
    for i in (5..20_000).step_by(1_999) {
        b[i] = item(&a[i].context, a[i].size, 4); // another epoch: divergence
    }
    a.push(item("only-on-a", 1, 0));
    b.push(item("only-on-b", 2, 0));
    let o = default_exchange(&a, &b);
    check(&a, &b, &o);
    let ahead = (0..20_000).step_by(997).count();
    let diverged = (5..20_000).step_by(1_999).count();
    assert_eq!((ahead, diverged), (21, 11));
    assert_eq!(o.a.len(), ahead + diverged + 2);
    assert!(o.bytes < 64 * 1024, "{} bytes", o.bytes);
}

#[test]
fn a_new_node_receives_everything_in_bounded_messages() {
    let a = contexts(10_000);
    let s = DigestSettings::default();
    let o = default_exchange(&a, &[]);
    check(&a, &[], &o);
    assert_eq!(o.a.len(), 10_000);
    assert!(
        o.a.iter()
            .all(|d| d.kind() == DifferenceKind::MissingRemotely)
    );
    // No descent: the empty side says so at the root and gets 128 items per message.
    assert!(o.messages <= 2 + 2 * 10_000u64.div_ceil(s.max_items as u64));
    assert!(o.largest < 20 * 1024, "largest message {} bytes", o.largest);
    // The other way round.
    let o = default_exchange(&[], &a);
    check(&[], &a, &o);
    assert_eq!(o.a.len(), 10_000);
}

#[test]
fn tiny_limits_split_every_range_and_item_list() {
    let mut a = contexts(3_000);
    let b: Vec<_> = a.iter().skip(1_000).cloned().collect();
    a.truncate(2_500);
    let tiny = DigestSettings {
        leaf_items: 2,
        max_ranges: 3,
        max_items: 2,
    };
    let o = exchange(
        Digest::new(a.clone()).unwrap(),
        Digest::new(b.clone()).unwrap(),
        tiny,
        DigestSettings::default(),
    );
    check(&a, &b, &o);
    assert_eq!(o.a.len(), 1_000 + 500);
}

#[test]
fn settled_at_full_depth_when_leaf_items_is_zero() {
    // With leaf_items 0 a range is only settled by items when one side has none there or it is
    // a single token: the descent goes down to depth 16.
    let a = contexts(50);
    let mut b = a.clone();
    b[7].size += 1;
    let zero = DigestSettings {
        leaf_items: 0,
        ..DigestSettings::default()
    };
    let o = exchange(
        Digest::new(a.clone()).unwrap(),
        Digest::new(b.clone()).unwrap(),
        zero,
        zero,
    );
    check(&a, &b, &o);
    assert!(o.round_trips >= u64::from(MAX_DEPTH) / 2);
}

/// The figures of the report. No timing assertions.
#[test]
fn measure_100k_contexts() {
    let n = 100_000;
    let items = contexts(n);
    let mut shuffled = items.clone();
    shuffled.sort_by_key(|i| token(&i.context).wrapping_mul(0x9e37_79b9_7f4a_7c15));

    let t = Instant::now();
    let sorted_digest = Digest::new(items.clone()).unwrap();
    let build_sorted = t.elapsed();
    let t = Instant::now();
    let shuffled_digest = Digest::new(shuffled).unwrap();
    let build_shuffled = t.elapsed();
    let t = Instant::now();
    let root = sorted_digest.root();
    let root_hash = t.elapsed();
    assert_eq!(root, shuffled_digest.root());

    let s = DigestSettings::default();
    let equal = exchange(sorted_digest.clone(), shuffled_digest, s, s);
    assert!(equal.a.is_empty());

    let mut lagging = items.clone();
    lagging[77_777].size -= 1;
    let lag = exchange(
        sorted_digest.clone(),
        Digest::new(lagging.clone()).unwrap(),
        s,
        s,
    );
    assert_eq!(lag.a.len(), 1);

    let mut scattered = items.clone();
    for i in (0..n).step_by(1_000) {
        scattered[i].size += 1;
    }
    let hundred = exchange(sorted_digest.clone(), Digest::new(scattered).unwrap(), s, s);
    assert_eq!(hundred.a.len(), 100);

    let missing = exchange(
        sorted_digest,
        Digest::new(items[..n - 1].to_vec()).unwrap(),
        s,
        s,
    );
    assert_eq!(missing.a.len(), 1);

    println!("digest of {n} contexts:");
    println!(
        "  build from sorted items {:?}, from shuffled items {:?}, root hash {:?}",
        build_sorted, build_shuffled, root_hash
    );
    for (name, o) in [
        ("equal", &equal),
        ("1 lagging", &lag),
        ("1 missing", &missing),
        ("100 scattered differences", &hundred),
    ] {
        println!(
            "  {name}: {} bytes in {} messages ({} round trips, largest message {} bytes), compare {:?}",
            o.bytes, o.messages, o.round_trips, o.largest, o.elapsed
        );
    }
}

fn arb_items(universe: usize) -> impl Strategy<Value = Vec<DigestItem>> {
    // Each context of the universe is absent or held with one of a few versions.
    proptest::collection::vec(proptest::option::of((0u64..3, 0u64..2)), universe).prop_map(
        |slots| {
            slots
                .into_iter()
                .enumerate()
                .filter_map(|(i, v)| v.map(|(size, epoch)| item(&format!("c{i}"), size, epoch)))
                .collect()
        },
    )
}

fn arb_settings() -> impl Strategy<Value = DigestSettings> {
    (0usize..5, 1usize..6, 1usize..6).prop_map(|(leaf_items, max_ranges, max_items)| {
        DigestSettings {
            leaf_items,
            max_ranges,
            max_items,
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn differences_equal_the_naive_set_difference(
        a in arb_items(120), b in arb_items(120), sa in arb_settings(), sb in arb_settings()
    ) {
        let o = exchange(Digest::new(a.clone()).unwrap(), Digest::new(b.clone()).unwrap(), sa, sb);
        prop_assert_eq!(&o.a, &naive(&a, &b));
        prop_assert_eq!(&o.b, &mirrored(&o.a));
    }

    #[test]
    fn mostly_equal_large_sets(
        n in 500usize..3_000,
        changes in proptest::collection::vec((0usize..3_000, 0u8..3), 0..12),
        s in arb_settings(),
    ) {
        let a = contexts(n);
        let mut b = a.clone();
        for (i, how) in changes {
            let i = i % b.len();
            match how {
                0 => b[i].size += 1,
                1 => b[i].epoch = None,
                _ => b[i].context.push('!'),
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        b.retain(|x| seen.insert(x.context.clone()));
        let o = exchange(Digest::new(a.clone()).unwrap(), Digest::new(b.clone()).unwrap(), s, s);
        prop_assert_eq!(&o.a, &naive(&a, &b));
        prop_assert_eq!(&o.b, &mirrored(&o.a));
    }
}

#[test]
fn messages_carry_at_most_the_configured_parts() {
    let a = contexts(4_000);
    let b: Vec<_> = a.iter().step_by(3).cloned().collect();
    let s = DigestSettings {
        leaf_items: 4,
        max_ranges: 10,
        max_items: 7,
    };
    let (mut ia, first) = DigestSession::initiator(Digest::new(a).unwrap(), s);
    let mut rb = DigestSession::responder(Digest::new(b).unwrap(), s);
    let mut next = Some(first);
    let mut to_b = true;
    while let Some(m) = next.take() {
        if let DigestMessage::Parts { parts, .. } = &m {
            let ranges = parts
                .iter()
                .filter(|p| matches!(p, DigestPart::Range { .. }))
                .count();
            let items: usize = parts
                .iter()
                .map(|p| match p {
                    DigestPart::Range { .. } => 0,
                    DigestPart::Items { items, .. } => items.len().max(1),
                    DigestPart::Resolved { items, absent } => items.len() + absent.len(),
                })
                .sum();
            assert!(ranges <= s.max_ranges && items <= s.max_items);
        }
        next = if to_b {
            rb.on_message(m).unwrap()
        } else {
            ia.on_message(m).unwrap()
        };
        to_b = !to_b;
    }
    assert_eq!(ia.differences().len(), 4_000 - 4_000usize.div_ceil(3));
    assert!(ia.on_message(DigestMessage::Done).is_err(), "finished");
}
