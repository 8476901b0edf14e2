//! `converge-ledger watch CONTEXT`: follow a context like `tail -f`, reconnecting and resuming
//! after the last printed sequence when the stream is interrupted.

use crate::error::{CliError, client_err};
use crate::output::{note, print_entry};
use crate::target::{ContextRead, Target};
use ledger_client::ClientError;
use std::time::Duration;
use tokio_stream::StreamExt;

#[derive(clap::Args, Debug)]
pub struct WatchArgs {
    #[command(flatten)]
    read: ContextRead,
    /// Start after this sequence (0 = from the beginning)
    #[arg(long, default_value_t = 0)]
    from: u64,
    /// Exit when the stream ends instead of reconnecting
    #[arg(long)]
    no_reconnect: bool,
    #[arg(long)]
    json: bool,
}

pub async fn run(args: WatchArgs) -> Result<(), CliError> {
    let WatchArgs {
        read,
        from,
        no_reconnect,
        json,
    } = args;
    let (target, context, key) = read.into_parts();
    watch(&target, &context, &key, from, no_reconnect, json).await
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
