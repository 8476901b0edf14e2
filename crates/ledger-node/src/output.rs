//! How the CLI prints: a readable line per entry or one JSON object per line, on a stdout that
//! may be a closed pipe (`| head`) or a full disk: a closed pipe ends the command quietly, any
//! other write error ends it with one line on stderr and a non-zero status
//! ([`CliError`](crate::error::CliError)). Progress bars go to stderr.

use crate::error::{CliError, write_error};
use ledger_client::render::{entry_json, payload_text};
use ledger_core::Entry;
use std::io::Write;

/// Writes one line to stdout (and flushes it, so a full disk is noticed at once).
pub fn out_line(line: &str) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .map_err(|e| write_error(&e, "stdout"))
}

/// A message for the person at the terminal (stderr); a failure to write it is ignored.
pub fn note(msg: &str) {
    let _ = writeln!(std::io::stderr(), "{msg}");
}

/// One readable line describing an entry.
pub fn entry_line(e: &Entry) -> String {
    let (payload, encoding) = payload_text(&e.payload);
    let mut line = format!(
        "#{} {} {} lamport={}",
        e.sequence,
        ledger_core::time::utc_millis(e.appended_at_ns),
        e.key,
        e.lamport_clock
    );
    if !e.metadata.is_empty() {
        let md: Vec<String> = e.metadata.iter().map(|(k, v)| format!("{k}={v}")).collect();
        line.push_str(&format!(" [{}]", md.join(" ")));
    }
    if encoding == "base64" {
        line.push_str(&format!(" base64:{payload}"));
    } else {
        line.push(' ');
        line.push_str(&payload);
    }
    line
}

/// Prints an entry in the chosen format.
pub fn print_entry(e: &Entry, json: bool) -> Result<(), CliError> {
    if json {
        out_line(&entry_json(e).to_string())
    } else {
        out_line(&entry_line(e))
    }
}

/// A progress bar on stderr when it is a terminal (hidden otherwise).
pub fn progress_bar(what: &str, total: Option<u64>) -> indicatif::ProgressBar {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_render() {
        assert_eq!(payload_text(b"hello"), ("hello".into(), "utf8"));
        assert_eq!(payload_text(&[0, 159, 146, 150]).1, "base64");
    }
}
