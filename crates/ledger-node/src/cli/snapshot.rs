//! `converge-ledger snapshot CONTEXT FILE|-`: save a snapshot of a context, streamed, with a
//! progress bar.

use crate::error::{CliError, client_err, write_error};
use crate::output::{note, progress_bar};
use crate::target::Target;
use ledger_client::ClientError;
use ledger_client::transfer::Progress;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct SnapshotArgs {
    #[command(flatten)]
    target: Target,
    context: String,
    /// Output file, `-` for stdout (or give it as the last argument)
    #[arg(long, short, required_unless_present = "file", conflicts_with = "file")]
    out: Option<PathBuf>,
    /// Output file, `-` for stdout
    file: Option<PathBuf>,
}

pub async fn run(args: SnapshotArgs) -> Result<(), CliError> {
    let out = args
        .out
        .or(args.file)
        .ok_or("give the output file (`-` for stdout)")?;
    snapshot(&args.target, &args.context, &out).await
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
