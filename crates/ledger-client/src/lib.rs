//! A typed client of Converge Ledger's gRPC API.
//!
//! # Layout
//! - [`LedgerClient`]: connect, append, get (one page or all), watch, snapshot, load.
//! - [`convert`]: wire ↔ domain conversions, the only place the two meet.

pub mod convert;

use ledger_core::{Entry, Metadata};
use ledger_proto::context::v1 as pb;
use pb::context_service_client::ContextServiceClient;
use thiserror::Error;
use tokio_stream::StreamExt;
use tonic::transport::{Channel, Endpoint};

pub use ledger_proto;

/// Largest message the client accepts or sends (snapshots of big contexts are single messages).
pub const MAX_MESSAGE_BYTES: usize = 1 << 30;

/// What a client call can fail with.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("{}: {}", .0.code(), .0.message())]
    Status(#[from] tonic::Status),
    #[error("the node sent an invalid response: {0}")]
    InvalidResponse(String),
}

impl ClientError {
    /// The gRPC status code, if the node answered with one.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            ClientError::Status(s) => Some(s.code()),
            _ => None,
        }
    }
}

/// One page of a Get.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page {
    pub entries: Vec<Entry>,
    pub latest_sequence: u64,
    pub has_more: bool,
    pub next_after_sequence: u64,
}

/// A connected client. Cheap to clone (one HTTP/2 connection, multiplexed).
#[derive(Clone, Debug)]
pub struct LedgerClient {
    inner: ContextServiceClient<Channel>,
}

impl LedgerClient {
    /// Connects to `addr` (`http://host:port`; a bare `host:port` gets `http://`).
    pub async fn connect(addr: &str) -> Result<Self, ClientError> {
        let url = if addr.contains("://") {
            addr.to_owned()
        } else {
            format!("http://{addr}")
        };
        let err = |source| ClientError::Connect {
            addr: url.clone(),
            source,
        };
        let channel = Endpoint::from_shared(url.clone())
            .map_err(err)?
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(err)?;
        Ok(Self::from_channel(channel))
    }

    /// A client over an existing channel.
    pub fn from_channel(channel: Channel) -> Self {
        LedgerClient {
            inner: ContextServiceClient::new(channel)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        }
    }

    /// The generated client, for calls this wrapper does not cover.
    pub fn raw(&self) -> ContextServiceClient<Channel> {
        self.inner.clone()
    }

    pub async fn append(
        &self,
        context_id: &str,
        key: &str,
        payload: Vec<u8>,
        metadata: Metadata,
        received_lamport_clock: Option<u64>,
    ) -> Result<Entry, ClientError> {
        let resp = self
            .raw()
            .append(pb::AppendRequest {
                context_id: context_id.to_owned(),
                key: key.to_owned(),
                payload,
                metadata: metadata.into_iter().collect(),
                received_lamport_clock,
            })
            .await?
            .into_inner();
        let entry = resp
            .entry
            .ok_or_else(|| ClientError::InvalidResponse("append response without entry".into()))?;
        convert::entry_from_pb(entry).map_err(ClientError::InvalidResponse)
    }

    /// One page of entries.
    pub async fn get(
        &self,
        context_id: &str,
        key: &str,
        after_sequence: u64,
        limit: u32,
    ) -> Result<Page, ClientError> {
        let r = self
            .raw()
            .get(pb::GetRequest {
                context_id: context_id.to_owned(),
                key: key.to_owned(),
                after_sequence,
                limit,
            })
            .await?
            .into_inner();
        let entries = r
            .entries
            .into_iter()
            .map(convert::entry_from_pb)
            .collect::<Result<_, _>>()
            .map_err(ClientError::InvalidResponse)?;
        Ok(Page {
            entries,
            latest_sequence: r.latest_sequence,
            has_more: r.has_more,
            next_after_sequence: r.next_after_sequence,
        })
    }

    /// Every entry after `after_sequence`, following pages until `has_more` is false.
    pub async fn get_all(
        &self,
        context_id: &str,
        key: &str,
        after_sequence: u64,
    ) -> Result<Vec<Entry>, ClientError> {
        let mut out = Vec::new();
        let mut after = after_sequence;
        loop {
            let page = self.get(context_id, key, after, 0).await?;
            out.extend(page.entries);
            if !page.has_more {
                return Ok(out);
            }
            if page.next_after_sequence <= after {
                return Err(ClientError::InvalidResponse(
                    "has_more is set but next_after_sequence does not advance".into(),
                ));
            }
            after = page.next_after_sequence;
        }
    }

    /// A stream of entries with sequence > `from_sequence`.
    pub async fn watch(
        &self,
        context_id: &str,
        key: &str,
        from_sequence: u64,
    ) -> Result<impl tokio_stream::Stream<Item = Result<Entry, ClientError>> + use<>, ClientError>
    {
        let stream = self
            .raw()
            .watch(pb::WatchRequest {
                context_id: context_id.to_owned(),
                key: key.to_owned(),
                from_sequence,
            })
            .await?
            .into_inner();
        Ok(stream.map(|ev| {
            let ev = ev?;
            let entry = ev
                .entry
                .ok_or_else(|| ClientError::InvalidResponse("watch event without entry".into()))?;
            convert::entry_from_pb(entry).map_err(ClientError::InvalidResponse)
        }))
    }

    pub async fn snapshot(&self, context_id: &str) -> Result<pb::SnapshotResponse, ClientError> {
        Ok(self
            .raw()
            .snapshot(pb::SnapshotRequest {
                context_id: context_id.to_owned(),
            })
            .await?
            .into_inner())
    }

    pub async fn load(
        &self,
        context_id: &str,
        snapshot: Vec<u8>,
        fail_if_exists: bool,
    ) -> Result<pb::LoadResponse, ClientError> {
        Ok(self
            .raw()
            .load(pb::LoadRequest {
                context_id: context_id.to_owned(),
                snapshot,
                fail_if_exists,
            })
            .await?
            .into_inner())
    }
}
