//! The `converge-ledger` command line: `serve` starts a node; the other commands are a client.

use crate::config::{Config, LogFormat, Overrides};
use crate::output::{CliError, note, out_line, print_entry, write_error};
use crate::target::Target;
use clap::{Parser, Subcommand};
use ledger_client::ClientError;
use ledger_client::transfer::Progress;
use ledger_core::{Metadata, NewEntry};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
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

#[derive(Subcommand, Debug)]
#[allow(clippy::large_enum_variant)] // parsed once per process
enum Command {
    /// Start a node (gRPC on --port, data in --data-dir)
    Serve {
        /// TOML config file (settings in docs/OPERATIONS.md)
        #[arg(long)]
        config: Option<PathBuf>,
        #[command(flatten)]
        overrides: Overrides,
    },
    /// Append one entry and print it as stored; with --from-file, many (JSON lines, in batches)
    Append {
        #[command(flatten)]
        target: Target,
        context: String,
        #[arg(required_unless_present = "from_file")]
        key: Option<String>,
        /// Payload text; `-` reads stdin (or use --file)
        payload: Option<String>,
        /// JSON lines to append, `-` for stdin: {"key":…, "payload":…, "metadata":{…}} per
        /// line, sent as atomic AppendBatch calls of up to --batch-size entries
        #[arg(long, value_name = "FILE", conflicts_with_all = ["key", "payload", "file", "meta", "received_lamport", "idempotency_key"])]
        from_file: Option<PathBuf>,
        /// Entries per AppendBatch call with --from-file
        #[arg(long, default_value_t = 1000, requires = "from_file")]
        batch_size: usize,
        /// Read the payload from a file
        #[arg(long, conflicts_with = "payload")]
        file: Option<PathBuf>,
        /// Metadata pair, repeatable
        #[arg(long = "meta", value_name = "KEY=VALUE")]
        meta: Vec<String>,
        /// Lamport clock received from another context (causal append)
        #[arg(long)]
        received_lamport: Option<u64>,
        /// Idempotency key: a retry with the same key stores nothing and returns the first entry
        #[arg(long)]
        idempotency_key: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Print entries of a context
    Get {
        #[command(flatten)]
        target: Target,
        context: String,
        /// Only entries with this key (also `--key` when no --cert is given)
        #[arg(long = "entry-key")]
        key: Option<String>,
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
        /// Only entries with this key (also `--key` when no --cert is given)
        #[arg(long = "entry-key")]
        key: Option<String>,
        /// Start after this sequence (0 = from the beginning)
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Exit when the stream ends instead of reconnecting
        #[arg(long)]
        no_reconnect: bool,
        #[arg(long)]
        json: bool,
    },
    /// Save a snapshot of a context to a file (`-` for stdout), streamed
    Snapshot {
        #[command(flatten)]
        target: Target,
        context: String,
        /// Output file, `-` for stdout (or give it as the last argument)
        #[arg(long, short, required_unless_present = "file", conflicts_with = "file")]
        out: Option<PathBuf>,
        /// Output file, `-` for stdout
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
    /// Ask the node's grpc.health.v1 service: exit 0 when it is SERVING, 1 with the reason
    /// otherwise (for container health checks and probes)
    Health {
        #[command(flatten)]
        target: Target,
        /// The service to check; "" (default) is the whole server: a cluster member turns
        /// SERVING once it has joined and compared its contexts with its peers
        #[arg(long, default_value = "")]
        service: String,
        /// Give up after this many milliseconds (connect and answer)
        #[arg(long, default_value_t = 3_000)]
        timeout_ms: u64,
    },
    /// Make throwaway certificates for development and tests
    Certs {
        #[command(subcommand)]
        what: CertsCommand,
    },
    /// Make bearer tokens for the auth file
    Token {
        #[command(subcommand)]
        what: TokenCommand,
    },
    /// See and manage a cluster: status, remove a dead member, quarantines
    Cluster {
        #[command(subcommand)]
        what: crate::cluster_cli::ClusterCommand,
    },
    /// Verify data locally against signed tree heads, without trusting the node
    Verify {
        #[command(subcommand)]
        what: VerifyCommand,
    },
    /// Load a snapshot file (`-` for stdin) into a context, streamed; all or nothing
    Load {
        #[command(flatten)]
        target: Target,
        context: String,
        /// Snapshot file, `-` for stdin (or give it as the last argument)
        #[arg(
            long = "in",
            short,
            required_unless_present = "file",
            conflicts_with = "file"
        )]
        input: Option<PathBuf>,
        /// Snapshot file, `-` for stdin
        file: Option<PathBuf>,
        /// Fail if the context already has entries
        #[arg(long)]
        fail_if_exists: bool,
    },
}

#[derive(Subcommand, Debug)]
enum CertsCommand {
    /// A throwaway CA, a node certificate (localhost, 127.0.0.1 and every --name) and a client
    /// certificate: ca.pem node.pem node.key client.pem client.key
    Dev {
        /// Directory to write into (created if missing)
        #[arg(long)]
        out: PathBuf,
        /// Another DNS name or IP address the node certificate covers (repeatable)
        #[arg(long = "name", value_name = "HOST")]
        names: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
enum TokenCommand {
    /// A new random token: printed on the first line, then the [[token]] table for the auth file
    New {
        /// What the token may do
        #[arg(long, value_enum)]
        role: crate::auth::Role,
        /// Only contexts whose id starts with this
        #[arg(long)]
        prefix: Option<String>,
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

pub(crate) fn client_err(e: ClientError) -> CliError {
    CliError::Message(e.to_string())
}

async fn run(command: Command) -> Result<(), CliError> {
    match command {
        Command::Serve { config, overrides } => {
            let config = Config::load(config.as_deref(), &overrides)?;
            init_logging(&config);
            let fds = crate::conn::FdBudget::new(
                crate::conn::raise_nofile_limit(),
                config.rocksdb_max_open_files,
                config.max_connections,
            );
            let listener = crate::server::bind(&config).await?;
            let addr = listener.local_addr().map_err(|e| e.to_string())?;
            let admin = match &config.admin_addr {
                Some(a) => Some(crate::admin::bind(a).await?),
                None => None,
            };
            let admin_addr = admin.as_ref().and_then(|l| l.local_addr().ok());
            let mut opened = crate::server::open(&config, &fds)?;
            opened.security.warn_if_exposed(&config);
            crate::server::start_cluster(&config, &mut opened, addr).await?;
            let (signer, identity) = (&opened.signer, &opened.identity);
            out_line(&crate::server::listening_line(
                addr,
                admin_addr,
                &config,
                signer,
                identity,
                opened.cluster.as_deref(),
            ))?;
            tracing::info!(
                open_file_limit = fds.limit,
                rocksdb_open_files = fds.rocksdb_open_files,
                max_connections = fds.max_connections,
                "file descriptors budgeted"
            );
            tracing::info!(
                %addr,
                data_dir = %config.data_dir.display(),
                durability = ?config.durability,
                node_id = %identity.node_id,
                public_key = %ledger_core::checkpoint::base64(signer.public_key().as_bytes()),
                key_id = %signer.key_id_hex(),
                key = %signer.source,
                "Converge Ledger serving"
            );
            crate::server::serve(
                config,
                opened,
                listener,
                admin,
                fds,
                crate::server::shutdown_signal(),
            )
            .await
            .map_err(CliError::from)
        }
        Command::Append {
            target,
            from_file: Some(from_file),
            context,
            batch_size,
            json,
            ..
        } => {
            crate::batch_cli::append_from_file(target, &context, &from_file, batch_size, json).await
        }
        Command::Append {
            target,
            context,
            key,
            payload,
            file,
            meta,
            received_lamport,
            idempotency_key,
            json,
            ..
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
            let key = key.ok_or("give a key (or --from-file)")?;
            let client = target.client().await.map_err(client_err)?;
            let e = client
                .append_entry(NewEntry {
                    context_id: context,
                    key,
                    payload,
                    metadata,
                    received_lamport_clock: received_lamport,
                    idempotency_key,
                })
                .await
                .map_err(client_err)?;
            print_entry(&e, json)
        }
        Command::Get {
            mut target,
            context,
            key,
            after,
            limit,
            json,
        } => {
            let key = target.take_key_filter(key);
            let client = target.client().await.map_err(client_err)?;
            if limit == 0 {
                for e in client
                    .get_all(&context, &key, after)
                    .await
                    .map_err(client_err)?
                {
                    print_entry(&e, json)?;
                }
            } else {
                let page = client
                    .get(&context, &key, after, limit)
                    .await
                    .map_err(client_err)?;
                for e in &page.entries {
                    print_entry(e, json)?;
                }
                if page.has_more && !json {
                    note(&format!(
                        "(more entries: continue with --after {})",
                        page.next_after_sequence
                    ));
                }
            }
            Ok(())
        }
        Command::Watch {
            mut target,
            context,
            key,
            from,
            no_reconnect,
            json,
        } => {
            let key = target.take_key_filter(key);
            watch(&target, &context, &key, from, no_reconnect, json).await
        }
        Command::Snapshot {
            target,
            context,
            out,
            file,
        } => {
            let out = out
                .or(file)
                .ok_or("give the output file (`-` for stdout)")?;
            snapshot(&target, &context, &out).await
        }
        Command::Head {
            target,
            context,
            out,
            public_key,
        } => crate::verify_cli::head(&target, &context, out.as_deref(), public_key.as_deref())
            .await
            .map_err(|e| CliError::Message(e.to_string()))
            .and_then(|json| out_line(&json)),
        Command::Health {
            target,
            service,
            timeout_ms,
        } => {
            let status =
                crate::health::check(&target.addr, &service, Duration::from_millis(timeout_ms))
                    .await?;
            out_line(status)
        }
        Command::Cluster { what } => crate::cluster_cli::run(what).await,
        Command::Certs {
            what: CertsCommand::Dev { out, names },
        } => {
            let written = crate::certs::dev(&out, &names)?;
            for p in written {
                out_line(&p.display().to_string())?;
            }
            Ok(())
        }
        Command::Token {
            what: TokenCommand::New { role, prefix },
        } => {
            if prefix.as_deref() == Some("") {
                return Err("--prefix is empty; leave it out to allow every context".into());
            }
            let token = crate::auth::new_token()?;
            out_line(&token)?;
            out_line(crate::auth::token_table(&token, role, prefix.as_deref()).trim_end())
        }
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
                    crate::verify_cli::entry(&target, &context, sequence, public_key.as_deref())
                        .await
                }
                VerifyCommand::Context {
                    target,
                    context,
                    public_key,
                } => crate::verify_cli::context(&target, &context, public_key.as_deref()).await,
            };
            out_line(&r.map_err(|e| CliError::Message(e.to_string()))?)
        }
        Command::Load {
            target,
            context,
            input,
            file,
            fail_if_exists,
        } => {
            let input = input
                .or(file)
                .ok_or("give the snapshot file (`-` for stdin)")?;
            load(&target, &context, &input, fail_if_exists).await
        }
    }
}

/// A progress bar on stderr when it is a terminal (hidden otherwise).
fn progress_bar(what: &str, total: Option<u64>) -> indicatif::ProgressBar {
    let bar = match total {
        Some(n) => indicatif::ProgressBar::new(n),
        None => indicatif::ProgressBar::new_spinner(),
    };
    bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
    let style = match total {
        Some(_) => "{msg} [{bar:30}] {pos}/{len} entries, {binary_bytes} ({elapsed})",
        None => "{msg} {spinner} {binary_bytes} ({elapsed})",
    };
    if let Ok(s) = indicatif::ProgressStyle::with_template(style) {
        bar.set_style(s.progress_chars("=> "));
    }
    bar.set_message(what.to_owned());
    bar
}

/// `snapshot CTX FILE|-`: streams the snapshot into the file (written to a temporary name and
/// renamed when complete, so a failed transfer never leaves a partial file) or to stdout.
async fn snapshot(target: &Target, context: &str, out: &Path) -> Result<(), CliError> {
    let client = target.client().await.map_err(client_err)?;
    let started = Instant::now();
    let to_stdout = out == Path::new("-");
    let partial = out.with_extension("partial");
    let mut sink: Box<dyn Write + Send> = if to_stdout {
        Box::new(std::io::stdout())
    } else {
        let f = std::fs::File::create(&partial)
            .map_err(|e| format!("cannot create {}: {e}", partial.display()))?;
        Box::new(std::io::BufWriter::with_capacity(1 << 20, f))
    };
    let mut bar: Option<indicatif::ProgressBar> = None;
    let result = client
        .snapshot_to(context, sink.as_mut(), |p: Progress| {
            let b = bar.get_or_insert_with(|| progress_bar("snapshot", Some(p.total_entries)));
            b.set_position(p.entries);
        })
        .await;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let summary = match result {
        Ok(s) => s,
        Err(e) => {
            drop(sink);
            if !to_stdout {
                let _ = std::fs::remove_file(&partial);
            }
            return Err(match e {
                ClientError::Io { source, .. }
                    if source.kind() == std::io::ErrorKind::BrokenPipe =>
                {
                    CliError::BrokenPipe
                }
                other => client_err(other),
            });
        }
    };
    drop(sink);
    let name = if to_stdout {
        "stdout".to_owned()
    } else {
        let f = std::fs::File::open(&partial)
            .and_then(|f| f.sync_all())
            .and_then(|()| std::fs::rename(&partial, out));
        f.map_err(|e| write_error(&e, &out.display().to_string()))?;
        out.display().to_string()
    };
    note(&format!(
        "wrote {name} ({} bytes, {} entries, root {}) in {:.1}s",
        summary.bytes,
        summary.metadata.entry_count,
        hex::encode(&summary.metadata.merkle_root),
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// `load CTX FILE|-`: streams the snapshot from the file or stdin; all or nothing.
async fn load(
    target: &Target,
    context: &str,
    input: &Path,
    fail_if_exists: bool,
) -> Result<(), CliError> {
    let (reader, size): (Box<dyn Read + Send>, Option<u64>) = if input == Path::new("-") {
        (Box::new(std::io::stdin()), None)
    } else {
        let f = std::fs::File::open(input)
            .map_err(|e| format!("cannot read {}: {e}", input.display()))?;
        let size = f.metadata().ok().map(|m| m.len());
        (
            Box::new(std::io::BufReader::with_capacity(1 << 20, f)),
            size,
        )
    };
    let client = target.client().await.map_err(client_err)?;
    let started = Instant::now();
    let bar = progress_bar("load", None);
    if let Some(n) = size {
        bar.set_length(n);
        if let Ok(s) = indicatif::ProgressStyle::with_template(
            "{msg} [{bar:30}] {binary_bytes}/{binary_total_bytes} ({elapsed})",
        ) {
            bar.set_style(s.progress_chars("=> "));
        }
    }
    let b = bar.clone();
    let resp = client
        .load_from(context, fail_if_exists, reader, move |p: Progress| {
            b.set_position(p.bytes)
        })
        .await;
    let sent = bar.position();
    bar.finish_and_clear();
    let resp = resp.map_err(client_err)?;
    note(&format!(
        "loaded {sent} bytes into {context}: {} entries restored, latest sequence {} ({:.1}s)",
        resp.entries_restored,
        resp.latest_sequence,
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

async fn watch(
    target: &Target,
    context: &str,
    key: &str,
    from: u64,
    no_reconnect: bool,
    json: bool,
) -> Result<(), CliError> {
    let mut position = from;
    loop {
        let mut printed: Result<(), CliError> = Ok(());
        let result: Result<(), ClientError> = async {
            let client = target.client().await?;
            let mut stream = client.watch(context, key, position).await?;
            while let Some(item) = stream.next().await {
                let e = item?;
                position = e.sequence;
                printed = print_entry(&e, json);
                if printed.is_err() {
                    break;
                }
            }
            Ok(())
        }
        .await;
        printed?;
        let retryable = match &result {
            Ok(()) => true,
            Err(ClientError::Connect { .. }) => true,
            Err(e) => e.code() == Some(tonic::Code::Unavailable),
        };
        if no_reconnect || !retryable {
            return result.map_err(client_err);
        }
        if let Err(e) = &result {
            note(&format!(
                "watch interrupted ({e}); resuming after sequence {position} in 1s"
            ));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
