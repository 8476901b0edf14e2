//! Snapshots saved and loaded as streams (`converge.ledger.v1.SnapshotService`), so contexts
//! larger than one gRPC message move with memory bounded on both sides.

use crate::{ClientError, LedgerClient, invalid};
use ledger_proto::context::v1 as pb;
use ledger_proto::ledger::v1 as lpb;
use std::io::{Read, Write};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// Bytes per piece of a streamed load.
pub const LOAD_PIECE_BYTES: usize = 1 << 20;

/// Progress of a transfer, reported after each piece.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Bytes moved so far.
    pub bytes: u64,
    /// Entries complete so far (snapshots only; 0 when unknown).
    pub entries: u64,
    /// Entries in all (snapshots only; 0 when unknown).
    pub total_entries: u64,
}

/// What a streamed snapshot held.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotSummary {
    pub bytes: u64,
    pub metadata: pb::SnapshotMetadata,
}

impl LedgerClient {
    /// Streams the snapshot of `context_id` into `out`, calling `progress` after each piece.
    pub async fn snapshot_to(
        &self,
        context_id: &str,
        out: &mut (dyn Write + Send),
        mut progress: impl FnMut(Progress),
    ) -> Result<SnapshotSummary, ClientError> {
        let mut stream = self
            .snapshots
            .clone()
            .snapshot_stream(lpb::SnapshotStreamRequest {
                context_id: context_id.to_owned(),
                chunk_bytes: 0,
            })
            .await?
            .into_inner();
        let mut metadata: Option<pb::SnapshotMetadata> = None;
        let mut bytes = 0u64;
        while let Some(chunk) = stream.message().await? {
            if let Some(m) = chunk.metadata {
                metadata = Some(m);
            }
            let total = metadata
                .as_ref()
                .ok_or_else(|| invalid("the first snapshot piece has no metadata".into()))?
                .entry_count;
            out.write_all(&chunk.data)
                .map_err(|source| ClientError::Io {
                    what: "writing the snapshot",
                    source,
                })?;
            bytes += chunk.data.len() as u64;
            progress(Progress {
                bytes,
                entries: chunk.entries_through,
                total_entries: total,
            });
        }
        out.flush().map_err(|source| ClientError::Io {
            what: "writing the snapshot",
            source,
        })?;
        let metadata = metadata.ok_or_else(|| invalid("the snapshot stream was empty".into()))?;
        Ok(SnapshotSummary { bytes, metadata })
    }

    /// Loads a snapshot read from `input` (a file, stdin) into `context_id` with one
    /// `LoadStream` call, in pieces, calling `progress` after each piece is sent. The reader
    /// runs on a blocking thread.
    pub async fn load_from(
        &self,
        context_id: &str,
        fail_if_exists: bool,
        mut input: Box<dyn Read + Send>,
        mut progress: impl FnMut(Progress) + Send + 'static,
    ) -> Result<pb::LoadResponse, ClientError> {
        let (tx, rx) = mpsc::channel::<lpb::LoadStreamRequest>(4);
        let context = context_id.to_owned();
        let reader = tokio::task::spawn_blocking(move || -> Result<(), ClientError> {
            let mut first = true;
            let mut sent = 0u64;
            loop {
                let mut buf = vec![0u8; LOAD_PIECE_BYTES];
                let mut filled = 0;
                while filled < buf.len() {
                    match input.read(&mut buf[filled..]) {
                        Ok(0) => break,
                        Ok(n) => filled += n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(source) => {
                            return Err(ClientError::Io {
                                what: "reading the snapshot",
                                source,
                            });
                        }
                    }
                }
                if filled == 0 && !first {
                    return Ok(());
                }
                buf.truncate(filled);
                sent += filled as u64;
                let msg = lpb::LoadStreamRequest {
                    context_id: if first {
                        context.clone()
                    } else {
                        String::new()
                    },
                    fail_if_exists,
                    data: buf,
                };
                first = false;
                if tx.blocking_send(msg).is_err() {
                    return Ok(()); // the call ended early; its status says why
                }
                progress(Progress {
                    bytes: sent,
                    ..Progress::default()
                });
                if filled < LOAD_PIECE_BYTES {
                    return Ok(());
                }
            }
        });
        let call = self
            .snapshots
            .clone()
            .load_stream(ReceiverStream::new(rx))
            .await;
        let read = reader.await.map_err(|e| ClientError::Io {
            what: "reading the snapshot",
            source: std::io::Error::other(e),
        })?;
        // A read error means the node saw a short stream: report the read error, not that.
        read?;
        Ok(call?.into_inner())
    }
}
