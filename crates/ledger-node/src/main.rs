/// mimalloc instead of glibc malloc: the request path allocates and frees many small,
/// short-lived buffers (messages, entries, strings) across threads (measured in
/// docs/BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    std::process::exit(ledger_node::cli::main());
}
