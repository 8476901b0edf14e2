//! `converge-ledger load CONTEXT FILE|-`: load a snapshot into a context, streamed, all or
//! nothing, with a progress bar.

use crate::error::{CliError, client_err};
use crate::output::{note, progress_bar};
use crate::target::Target;
use ledger_client::transfer::Progress;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct LoadArgs {
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
}

pub async fn run(args: LoadArgs) -> Result<(), CliError> {
    let input = args
        .input
        .or(args.file)
        .ok_or("give the snapshot file (`-` for stdin)")?;
    load(&args.target, &args.context, &input, args.fail_if_exists).await
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
