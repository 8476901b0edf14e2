//! [`CliError`]: why a command stopped early, and how failures become one.

use ledger_client::ClientError;

/// Why a command stopped early.
#[derive(Debug)]
pub enum CliError {
    /// stdout was closed by its reader (`converge-ledger get … | head -1`): exit quietly, 0.
    BrokenPipe,
    /// Anything else: printed as `error: <message>`, exit 1.
    Message(String),
}

impl From<String> for CliError {
    fn from(s: String) -> Self {
        CliError::Message(s)
    }
}

impl From<&str> for CliError {
    fn from(s: &str) -> Self {
        CliError::Message(s.to_owned())
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CliError::BrokenPipe => f.write_str("output closed"),
            CliError::Message(m) => f.write_str(m),
        }
    }
}

/// The error for a failed write to `what` (stdout, a file).
pub fn write_error(e: &std::io::Error, what: &str) -> CliError {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        CliError::BrokenPipe
    } else {
        CliError::Message(format!("cannot write to {what}: {e}"))
    }
}

/// A client's failure as the CLI reports it.
pub fn client_err(e: ClientError) -> CliError {
    CliError::Message(e.to_string())
}
