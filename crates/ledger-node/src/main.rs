fn main() {
    std::process::exit(ledger_node::cli::main());
}
