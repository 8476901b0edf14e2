//! The `converge-ledger` command line: `serve` starts a node; the other commands are a client.

use crate::config::{Config, LogFormat, Overrides};
use crate::output::print_entry;
use clap::{Parser, Subcommand};
use ledger_client::{ClientError, LedgerClient};
use ledger_core::Metadata;
use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio_stream::StreamExt;

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

#[derive(clap::Args, Debug, Clone)]
struct Target {
    /// Node address
    #[arg(long, env = "LEDGER_ADDR", default_value = "http://127.0.0.1:50051")]
    addr: String,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Start a node (gRPC on --port, data in --data-dir)
    Serve {
        /// TOML config file (settings in docs/OPERATIONS.md)
        #[arg(long)]
        config: Option<PathBuf>,
        #[command(flatten)]
        overrides: Overrides,
    },
    /// Append one entry and print it as stored
    Append {
        #[command(flatten)]
        target: Target,
        context: String,
        key: String,
        /// Payload text; `-` reads stdin (or use --file)
        payload: Option<String>,
        /// Read the payload from a file
        #[arg(long, conflicts_with = "payload")]
        file: Option<PathBuf>,
        /// Metadata pair, repeatable
        #[arg(long = "meta", value_name = "KEY=VALUE")]
        meta: Vec<String>,
        /// Lamport clock received from another context (causal append)
        #[arg(long)]
        received_lamport: Option<u64>,
        #[arg(long)]
        json: bool,
    },
    /// Print entries of a context
    Get {
        #[command(flatten)]
        target: Target,
        context: String,
        /// Only entries with this key
        #[arg(long, default_value = "")]
        key: String,
        /// Only entries after this sequence
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// At most this many entries (0 = all, following pages)
        #[arg(long, default_value_t = 0)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
    /// Follow a context like `tail -f`, reconnecting and resuming after interruptions
    Watch {
        #[command(flatten)]
        target: Target,
        context: String,
        #[arg(long, default_value = "")]
        key: String,
        /// Start after this sequence (0 = from the beginning)
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Exit when the stream ends instead of reconnecting
        #[arg(long)]
        no_reconnect: bool,
        #[arg(long)]
        json: bool,
    },
    /// Save a snapshot of a context to a file
    Snapshot {
        #[command(flatten)]
        target: Target,
        context: String,
        /// Output file (or give it as the last argument)
        #[arg(long, short, required_unless_present = "file", conflicts_with = "file")]
        out: Option<PathBuf>,
        /// Output file
        file: Option<PathBuf>,
    },
    /// Print the signed tree head of a context (verified against the trusted key), optionally saving it
    Head {
        #[command(flatten)]
        target: Target,
        context: String,
        /// Save the head to this file (JSON), for `verify snapshot --head`
        #[arg(long, short)]
        out: Option<PathBuf>,
        /// Trusted Ed25519 public key (base64); default: the node's, trusted on first use
        #[arg(long)]
        public_key: Option<String>,
    },
    /// Verify data locally against signed tree heads, without trusting the node
    Verify {
        #[command(subcommand)]
        what: VerifyCommand,
    },
    /// Load a snapshot file into a context
    Load {
        #[command(flatten)]
        target: Target,
        context: String,
        /// Snapshot file (or give it as the last argument)
        #[arg(
            long = "in",
            short,
            required_unless_present = "file",
            conflicts_with = "file"
        )]
        input: Option<PathBuf>,
        /// Snapshot file
        file: Option<PathBuf>,
        /// Fail if the context already has entries
        #[arg(long)]
        fail_if_exists: bool,
    },
}

#[derive(Subcommand, Debug)]
enum VerifyCommand {
    /// A snapshot file: checksum, every content hash, the root (offline)
    Snapshot {
        file: PathBuf,
        /// Expected Merkle root (hex)
        #[arg(long, conflicts_with = "head")]
        root: Option<String>,
        /// A tree head file saved by `converge-ledger head --out`
        #[arg(long)]
        head: Option<PathBuf>,
        /// Trusted Ed25519 public key (base64); default: the one in the head file
        #[arg(long)]
        public_key: Option<String>,
    },
    /// One entry: fetch it, its inclusion proof and the signed head, check them locally
    Entry {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        context: String,
        #[arg(long)]
        sequence: u64,
        /// Trusted Ed25519 public key (base64); default: the node's, trusted on first use
        #[arg(long)]
        public_key: Option<String>,
    },
    /// A whole context: recompute the root from every entry and compare with the signed head
    Context {
        #[command(flatten)]
        target: Target,
        context: String,
        /// Trusted Ed25519 public key (base64); default: the node's, trusted on first use
        #[arg(long)]
        public_key: Option<String>,
    },
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
            eprintln!("error: cannot start the async runtime: {e}");
            return 1;
        }
    };
    let result = rt.block_on(run(cli.command));
    match result {
        Ok(()) => 0,
        Err(msg) => {
            eprintln!("error: {msg}");
            1
        }
    }
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match config.log_format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

fn client_err(e: ClientError) -> String {
    e.to_string()
}

async fn run(command: Command) -> Result<(), String> {
    match command {
        Command::Serve { config, overrides } => {
            let config = Config::load(config.as_deref(), &overrides)?;
            init_logging(&config);
            let listener = crate::server::bind(&config).await?;
            let addr = listener.local_addr().map_err(|e| e.to_string())?;
            let (ledger, signer) = crate::server::open(&config)?;
            println!("{}", crate::server::listening_line(addr, &config, &signer));
            let _ = std::io::stdout().flush();
            tracing::info!(
                %addr,
                data_dir = %config.data_dir.display(),
                durability = ?config.durability,
                public_key = %ledger_core::checkpoint::base64(signer.public_key().as_bytes()),
                key_id = %signer.key_id_hex(),
                key = %signer.source,
                "Converge Ledger serving"
            );
            crate::server::serve(
                config,
                ledger,
                signer,
                listener,
                crate::server::shutdown_signal(),
            )
            .await
        }
        Command::Append {
            target,
            context,
            key,
            payload,
            file,
            meta,
            received_lamport,
            json,
        } => {
            let payload = match (payload.as_deref(), file) {
                (_, Some(f)) => {
                    std::fs::read(&f).map_err(|e| format!("cannot read {}: {e}", f.display()))?
                }
                (Some("-"), None) => {
                    let mut buf = Vec::new();
                    std::io::stdin()
                        .read_to_end(&mut buf)
                        .map_err(|e| format!("cannot read stdin: {e}"))?;
                    buf
                }
                (Some(p), None) => p.as_bytes().to_vec(),
                (None, None) => return Err("give a payload, `-` for stdin, or --file".into()),
            };
            let mut metadata = Metadata::new();
            for m in meta {
                let (k, v) = m
                    .split_once('=')
                    .ok_or_else(|| format!("--meta {m:?} is not KEY=VALUE"))?;
                metadata.insert(k.to_owned(), v.to_owned());
            }
            let client = LedgerClient::connect(&target.addr)
                .await
                .map_err(client_err)?;
            let e = client
                .append(&context, &key, payload, metadata, received_lamport)
                .await
                .map_err(client_err)?;
            print_entry(&e, json);
            Ok(())
        }
        Command::Get {
            target,
            context,
            key,
            after,
            limit,
            json,
        } => {
            let client = LedgerClient::connect(&target.addr)
                .await
                .map_err(client_err)?;
            if limit == 0 {
                for e in client
                    .get_all(&context, &key, after)
                    .await
                    .map_err(client_err)?
                {
                    print_entry(&e, json);
                }
            } else {
                let page = client
                    .get(&context, &key, after, limit)
                    .await
                    .map_err(client_err)?;
                for e in &page.entries {
                    print_entry(e, json);
                }
                if page.has_more && !json {
                    eprintln!(
                        "(more entries: continue with --after {})",
                        page.next_after_sequence
                    );
                }
            }
            Ok(())
        }
        Command::Watch {
            target,
            context,
            key,
            from,
            no_reconnect,
            json,
        } => watch(&target.addr, &context, &key, from, no_reconnect, json).await,
        Command::Snapshot {
            target,
            context,
            out,
            file,
        } => {
            let out = out.or(file).ok_or("give the output file")?;
            let client = LedgerClient::connect(&target.addr)
                .await
                .map_err(client_err)?;
            let started = Instant::now();
            let resp = with_progress("snapshot", client.snapshot(&context))
                .await
                .map_err(client_err)?;
            std::fs::write(&out, &resp.snapshot)
                .map_err(|e| format!("cannot write {}: {e}", out.display()))?;
            let root = resp
                .metadata
                .as_ref()
                .map(|m| hex::encode(&m.merkle_root))
                .unwrap_or_default();
            eprintln!(
                "wrote {} ({} bytes, {} entries, root {root}) in {:.1}s",
                out.display(),
                resp.snapshot.len(),
                resp.sequence,
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Command::Head {
            target,
            context,
            out,
            public_key,
        } => crate::verify_cli::head(
            &target.addr,
            &context,
            out.as_deref(),
            public_key.as_deref(),
        )
        .await
        .map_err(|e| e.to_string()),
        Command::Verify { what } => {
            let r = match what {
                VerifyCommand::Snapshot {
                    file,
                    root,
                    head,
                    public_key,
                } => crate::verify_cli::snapshot(
                    &file,
                    root.as_deref(),
                    head.as_deref(),
                    public_key.as_deref(),
                ),
                VerifyCommand::Entry {
                    target,
                    context,
                    sequence,
                    public_key,
                } => {
                    crate::verify_cli::entry(
                        &target.addr,
                        &context,
                        sequence,
                        public_key.as_deref(),
                    )
                    .await
                }
                VerifyCommand::Context {
                    target,
                    context,
                    public_key,
                } => {
                    crate::verify_cli::context(&target.addr, &context, public_key.as_deref()).await
                }
            };
            r.map_err(|e| e.to_string())
        }
        Command::Load {
            target,
            context,
            input,
            file,
            fail_if_exists,
        } => {
            let input = input.or(file).ok_or("give the snapshot file")?;
            let bytes = std::fs::read(&input)
                .map_err(|e| format!("cannot read {}: {e}", input.display()))?;
            let client = LedgerClient::connect(&target.addr)
                .await
                .map_err(client_err)?;
            let started = Instant::now();
            let size = bytes.len();
            let resp = with_progress("load", client.load(&context, bytes, fail_if_exists))
                .await
                .map_err(client_err)?;
            eprintln!(
                "loaded {} bytes into {context}: {} entries restored, latest sequence {} ({:.1}s)",
                size,
                resp.entries_restored,
                resp.latest_sequence,
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
    }
}

/// Runs a long request, printing elapsed time to a terminal's stderr every second.
async fn with_progress<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::pin!(fut);
    let tty = std::io::stderr().is_terminal();
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tokio::select! {
            r = &mut fut => {
                if tty { eprint!("\r\x1b[K"); }
                return r;
            }
            _ = tick.tick() => {
                if tty {
                    eprint!("\r{what}: transferring… {:.0}s", started.elapsed().as_secs_f64());
                } else if started.elapsed() >= Duration::from_secs(5) {
                    eprintln!("{what}: still transferring after {:.0}s", started.elapsed().as_secs_f64());
                }
            }
        }
    }
}

async fn watch(
    addr: &str,
    context: &str,
    key: &str,
    from: u64,
    no_reconnect: bool,
    json: bool,
) -> Result<(), String> {
    let mut position = from;
    loop {
        let result: Result<(), ClientError> = async {
            let client = LedgerClient::connect(addr).await?;
            let mut stream = client.watch(context, key, position).await?;
            while let Some(item) = stream.next().await {
                let e = item?;
                position = e.sequence;
                print_entry(&e, json);
                let _ = std::io::stdout().flush();
            }
            Ok(())
        }
        .await;
        let retryable = match &result {
            Ok(()) => true,
            Err(ClientError::Connect { .. }) => true,
            Err(e) => e.code() == Some(tonic::Code::Unavailable),
        };
        if no_reconnect || !retryable {
            return result.map_err(client_err);
        }
        if let Err(e) = &result {
            eprintln!("watch interrupted ({e}); resuming after sequence {position} in 1s");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
