//! `converge-ledger token new --role ROLE [--prefix P]`: a new random token, printed on the
//! first line, then its `[[token]]` table for the auth file.

use crate::error::CliError;
use crate::output::out_line;
use ledger_server::auth::{TokenRole, new_token, token_table};

#[derive(clap::Subcommand, Debug)]
pub enum TokenCommand {
    /// A new random token: printed on the first line, then the [[token]] table for the auth file
    New {
        /// What the token may do
        #[arg(long, value_enum)]
        role: TokenRole,
        /// Only contexts whose id starts with this
        #[arg(long)]
        prefix: Option<String>,
    },
}

pub fn run(what: TokenCommand) -> Result<(), CliError> {
    let TokenCommand::New { role, prefix } = what;
    if prefix.as_deref() == Some("") {
        return Err("--prefix is empty; leave it out to allow every context".into());
    }
    let token = new_token()?;
    out_line(&token)?;
    out_line(token_table(&token, role, prefix.as_deref()).trim_end())
}
