//! `converge-ledger serve`: load the configuration, start logging, bind, open the data dir,
//! join the cluster if configured, print the listening line, serve until SIGTERM or Ctrl-C.

use crate::error::CliError;
use crate::output::out_line;
use ledger_server::config::{Config, LogFormat, Overrides};
use ledger_server::conn::{FdBudget, raise_nofile_limit};
use ledger_server::serve::{self as server, Opened};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// TOML config file (settings in docs/OPERATIONS.md)
    #[arg(long)]
    config: Option<PathBuf>,
    #[command(flatten)]
    overrides: Overrides,
}

/// The `tracing` filter used when `RUST_LOG` is not set: the `log_level` setting.
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

pub async fn run(args: ServeArgs) -> Result<(), CliError> {
    let config = Config::load(args.config.as_deref(), &args.overrides)?;
    init_logging(&config);
    let fds = FdBudget::new(
        raise_nofile_limit(),
        config.rocksdb_max_open_files,
        config.max_connections,
    );
    let listener = server::bind(&config).await?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let admin = match &config.admin_addr {
        Some(a) => Some(ledger_server::admin::bind(a).await?),
        None => None,
    };
    let admin_addr = admin.as_ref().and_then(|l| l.local_addr().ok());
    let mut opened = server::open(&config, &fds)?;
    opened.security.warn_if_exposed(&config);
    server::start_cluster(&config, &mut opened, addr).await?;
    out_line(&server::listening_line(addr, admin_addr, &config, &opened))?;
    log_started(&config, &fds, addr, &opened);
    server::serve(
        config,
        opened,
        listener,
        admin,
        fds,
        server::shutdown_signal(),
    )
    .await
    .map_err(CliError::from)
}

/// What the node started with, in the log.
fn log_started(config: &Config, fds: &FdBudget, addr: SocketAddr, opened: &Opened) {
    let (signer, identity) = (&opened.signer, &opened.identity);
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
}
