//! A bounded, deterministic fuzz run for the test suite: every target over its seeds and
//! `LEDGER_FUZZ_ITERATIONS` (default 2,000) mutations of them per target — bit flips, byte
//! changes, truncations, splices, inserted length-like bytes. Coverage-guided runs use
//! libFuzzer (fuzz/README.md); this one catches regressions on stable, in a few seconds.

use ledger_fuzz::{TARGETS, run, seeds::seeds};

/// xorshift64*: deterministic, so a failure reproduces from the printed iteration.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..=rng.below(4) {
        match rng.below(7) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
            1 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] = rng.next() as u8;
            }
            2 if !v.is_empty() => {
                let keep = rng.below(v.len());
                v.truncate(keep);
            }
            3 => {
                let at = rng.below(v.len() + 1);
                let from = rng.below(other.len() + 1);
                let take = rng.below(other.len() - from + 1);
                let piece = other[from..from + take].to_vec();
                v.splice(at..at, piece);
            }
            4 => {
                // Length-like values: 0, max, just over common limits.
                let at = rng.below(v.len() + 1);
                let vals: [&[u8]; 4] = [&[0xff; 4], &[0x7f, 0xff, 0xff, 0xff], &[0; 8], &[0x80; 5]];
                let piece = vals[rng.below(vals.len())].to_vec();
                v.splice(at..at, piece);
            }
            5 if v.len() > 1 => {
                let i = rng.below(v.len());
                let j = rng.below(v.len());
                v.swap(i, j);
            }
            _ => v.push(rng.next() as u8),
        }
    }
    v
}

#[test]
fn every_target_survives_its_seeds_and_their_mutations() {
    let iterations: usize = std::env::var("LEDGER_FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    for (name, _) in TARGETS {
        let corpus = seeds(name);
        for s in &corpus {
            run(name, s);
        }
        let base: Vec<Vec<u8>> = if corpus.is_empty() {
            vec![Vec::new()]
        } else {
            corpus
        };
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ name.len() as u64);
        for i in 0..iterations {
            let a = &base[rng.below(base.len())];
            let b = &base[rng.below(base.len())];
            let input = mutate(&mut rng, a, b);
            let r = std::panic::catch_unwind(|| run(name, &input));
            assert!(
                r.is_ok(),
                "target {name} panicked at iteration {i} on input {}",
                input.iter().map(|b| format!("{b:02x}")).collect::<String>()
            );
        }
    }
}

/// Replays one input file on one target: `LEDGER_FUZZ_TARGET=<name> LEDGER_FUZZ_INPUT=<file>
/// cargo test -p ledger-fuzz -- --ignored replay`.
#[test]
#[ignore]
fn replay() {
    let name = std::env::var("LEDGER_FUZZ_TARGET").expect("LEDGER_FUZZ_TARGET");
    let path = std::env::var("LEDGER_FUZZ_INPUT").expect("LEDGER_FUZZ_INPUT");
    run(&name, &std::fs::read(path).expect("read the input"));
}
