//! `converge-ledger append CONTEXT KEY PAYLOAD`: one entry, printed as stored; with
//! `--from-file FILE`, JSON lines appended in batches.
//!
//! With `--from-file`, each non-empty line is one entry: `{"key": "...", "payload": "...", "metadata": {...},
//! "received_lamport_clock": n}` (`metadata` and `received_lamport_clock` optional). The
//! payload is UTF-8 text, or base64 with `"payload_encoding": "base64"` — the shape
//! `get --json` prints, so `get --json` output appends as is (its other fields are ignored).
//! Lines are sent as AppendBatch calls of up to `--batch-size` entries: each batch is stored
//! all or nothing, the file as a whole is not (a failure names the lines of the refused batch
//! and how many entries were stored before it).

use crate::error::{CliError, client_err};
use crate::output::print_entry;
use crate::target::Target;
use base64::Engine;
use ledger_core::{Metadata, NewEntry};
use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct AppendArgs {
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
}

pub async fn run(args: AppendArgs) -> Result<(), CliError> {
    match &args.from_file {
        Some(file) => {
            append_from_file(
                &args.target,
                &args.context,
                file,
                args.batch_size,
                args.json,
            )
            .await
        }
        None => append_one(args).await,
    }
}

/// One entry: the payload from the argument, stdin (`-`) or `--file`.
async fn append_one(args: AppendArgs) -> Result<(), CliError> {
    let AppendArgs {
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
    } = args;
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

/// One input line.
#[derive(serde::Deserialize)]
struct Line {
    key: String,
    #[serde(default)]
    payload: String,
    #[serde(default)]
    payload_encoding: Option<String>,
    #[serde(default)]
    metadata: Metadata,
    #[serde(default)]
    received_lamport_clock: Option<u64>,
}

/// Parses one JSON line into an append of `context` (`number` is the 1-based line number).
pub fn parse_line(context: &str, text: &str, number: usize) -> Result<NewEntry, String> {
    let line: Line = serde_json::from_str(text).map_err(|e| format!("line {number}: {e}"))?;
    let payload = match line.payload_encoding.as_deref() {
        None | Some("utf8") => line.payload.into_bytes(),
        Some("base64") => base64::engine::general_purpose::STANDARD
            .decode(&line.payload)
            .map_err(|e| format!("line {number}: payload is not base64: {e}"))?,
        Some(other) => {
            return Err(format!(
                "line {number}: payload_encoding {other:?} is neither \"utf8\" nor \"base64\""
            ));
        }
    };
    Ok(NewEntry {
        context_id: context.to_owned(),
        key: line.key,
        payload,
        metadata: line.metadata,
        received_lamport_clock: line.received_lamport_clock,
        idempotency_key: None,
    })
}

/// Appends every line of `file` (`-`: stdin) to `context` in batches of up to `batch_size`,
/// printing each stored entry.
pub async fn append_from_file(
    target: &Target,
    context: &str,
    file: &Path,
    batch_size: usize,
    json: bool,
) -> Result<(), CliError> {
    if batch_size == 0 {
        return Err("--batch-size must be at least 1".into());
    }
    let reader: Box<dyn BufRead> = if file == Path::new("-") {
        Box::new(std::io::BufReader::new(std::io::stdin()))
    } else {
        let f = std::fs::File::open(file)
            .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        Box::new(std::io::BufReader::new(f))
    };
    let client = target.client().await.map_err(client_err)?;
    let mut batch = Vec::with_capacity(batch_size);
    let mut first_line = 0;
    let mut stored = 0u64;
    let mut lines = reader.lines().enumerate().peekable();
    while let Some((i, line)) = lines.next() {
        let text = line.map_err(|e| format!("cannot read line {}: {e}", i + 1))?;
        if !text.trim().is_empty() {
            if batch.is_empty() {
                first_line = i + 1;
            }
            batch.push(parse_line(context, &text, i + 1)?);
        }
        if batch.len() == batch_size || (lines.peek().is_none() && !batch.is_empty()) {
            let n = batch.len();
            let entries = client
                .append_batch(context, std::mem::take(&mut batch))
                .await
                .map_err(|e| {
                    format!(
                        "the batch of lines {first_line}-{} was refused ({}); {stored} entries \
                         from earlier lines were stored",
                        i + 1,
                        client_err(e)
                    )
                })?;
            stored += n as u64;
            for e in &entries {
                print_entry(e, json)?;
            }
        }
    }
    if stored == 0 {
        return Err("no entries in the input (one JSON object per line)".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_take_text_base64_metadata_and_clock() {
        let e = parse_line(
            "c",
            r#"{"key":"k","payload":"hi","metadata":{"a":"b"},"received_lamport_clock":7}"#,
            1,
        )
        .unwrap();
        assert_eq!((e.key.as_str(), e.payload.as_slice()), ("k", &b"hi"[..]));
        assert_eq!(e.metadata.get("a").map(String::as_str), Some("b"));
        assert_eq!(e.received_lamport_clock, Some(7));
        let e = parse_line(
            "c",
            r#"{"key":"k","payload":"AAE=","payload_encoding":"base64","sequence":3}"#,
            2,
        )
        .unwrap();
        assert_eq!(e.payload, vec![0, 1]);
        let err = parse_line("c", r#"{"payload":"x"}"#, 9).unwrap_err();
        assert!(err.starts_with("line 9: missing field `key`"), "{err}");
    }
}
