//! `converge-ledger get CONTEXT`: print a context's entries (one page with `--limit`, else all,
//! following pages).

use crate::error::{CliError, client_err};
use crate::output::{note, print_entry};
use crate::target::ContextRead;

#[derive(clap::Args, Debug)]
pub struct GetArgs {
    #[command(flatten)]
    read: ContextRead,
    /// Only entries after this sequence
    #[arg(long, default_value_t = 0)]
    after: u64,
    /// At most this many entries (0 = all, following pages)
    #[arg(long, default_value_t = 0)]
    limit: u32,
    #[arg(long)]
    json: bool,
}

pub async fn run(args: GetArgs) -> Result<(), CliError> {
    let GetArgs {
        read,
        after,
        limit,
        json,
    } = args;
    let (target, context, key) = read.into_parts();
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
