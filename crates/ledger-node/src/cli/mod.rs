//! The `converge-ledger` command line: parses the command and hands it to its file; `serve`
//! starts a node, the other commands are a client (or, for `certs`, `token` and `verify
//! snapshot`, local tools).

pub mod append;
pub mod certs;
pub mod cluster;
pub mod get;
pub mod health;
pub mod load;
pub mod serve;
pub mod snapshot;
pub mod token;
pub mod verify;
pub mod watch;

use crate::error::CliError;
use crate::output::note;
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "converge-ledger",
    version,
    about = "Converge Ledger: an append-only, verifiable context store for agent engines"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
#[allow(clippy::large_enum_variant)] // parsed once per process
enum Command {
    /// Start a node (gRPC on --port, data in --data-dir)
    Serve(serve::ServeArgs),
    /// Append one entry and print it as stored; with --from-file, many (JSON lines, in batches)
    Append(append::AppendArgs),
    /// Print entries of a context
    Get(get::GetArgs),
    /// Follow a context like `tail -f`, reconnecting and resuming after interruptions
    Watch(watch::WatchArgs),
    /// Save a snapshot of a context to a file (`-` for stdout), streamed
    Snapshot(snapshot::SnapshotArgs),
    /// Print the signed tree head of a context (verified against the trusted key), optionally saving it
    Head(verify::HeadArgs),
    /// Ask the node's grpc.health.v1 service: exit 0 when it is SERVING, 1 with the reason
    /// otherwise (for container health checks and probes)
    Health(health::HealthArgs),
    /// Make throwaway certificates for development and tests
    Certs {
        #[command(subcommand)]
        what: certs::CertsCommand,
    },
    /// Make bearer tokens for the auth file
    Token {
        #[command(subcommand)]
        what: token::TokenCommand,
    },
    /// See and manage a cluster: status, remove a dead member, quarantines
    Cluster {
        #[command(subcommand)]
        what: cluster::ClusterCommand,
    },
    /// Verify data locally against signed tree heads, without trusting the node
    Verify {
        #[command(subcommand)]
        what: verify::VerifyCommand,
    },
    /// Load a snapshot file (`-` for stdin) into a context, streamed; all or nothing
    Load(load::LoadArgs),
}

/// Runs the command line; returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            note(&format!("error: cannot start the async runtime: {e}"));
            return 1;
        }
    };
    let result = rt.block_on(run(cli.command));
    match result {
        Ok(()) => 0,
        // The reader of our output went away (`| head`): nothing more to say, like other
        // Unix tools.
        Err(CliError::BrokenPipe) => 0,
        Err(CliError::Message(msg)) => {
            note(&format!("error: {msg}"));
            1
        }
    }
}

async fn run(command: Command) -> Result<(), CliError> {
    match command {
        Command::Serve(args) => serve::run(args).await,
        Command::Append(args) => append::run(args).await,
        Command::Get(args) => get::run(args).await,
        Command::Watch(args) => watch::run(args).await,
        Command::Snapshot(args) => snapshot::run(args).await,
        Command::Head(args) => verify::run_head(args).await,
        Command::Health(args) => health::run(args).await,
        Command::Cluster { what } => cluster::run(what).await,
        Command::Certs { what } => certs::run(what),
        Command::Token { what } => token::run(what),
        Command::Verify { what } => verify::run(what).await,
        Command::Load(args) => load::run(args).await,
    }
}
