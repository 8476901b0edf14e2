//! Writes every target's seed inputs into `<dir>/<target>/seed-<n>` (the corpus layout cargo
//! fuzz uses): `cargo run -p ledger-fuzz --example write_seeds -- fuzz/corpus`.

fn main() {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "fuzz/corpus".into());
    for (name, _) in ledger_fuzz::TARGETS {
        let d = std::path::Path::new(&dir).join(name);
        std::fs::create_dir_all(&d).expect("create the corpus dir");
        for (i, s) in ledger_fuzz::seeds::seeds(name).iter().enumerate() {
            std::fs::write(d.join(format!("seed-{i}")), s).expect("write a seed");
        }
    }
}
