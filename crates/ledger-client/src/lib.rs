//! A typed client of Converge Ledger's gRPC API.
//!
//! # Layout
//! - [`LedgerClient`]: connect, append, get (one page or all), watch, snapshot, load.
//! - [`cluster`]: [`cluster::ClusterClient`], appends sent straight to each context's writer
//!   by the nodes' placement function, reads to a replica.
//! - [`connect`]: TLS and bearer tokens ([`ConnectOptions`]).
//! - [`pipeline`]: [`AppendPipeline`], appends pipelined on one stream shared by many tasks.
//! - [`retry`]: appends retried safely after timeouts and outages (idempotency keys).
//! - [`transfer`]: snapshots saved and loaded as streams, with bounded memory.
//! - [`convert`]: wire ↔ domain conversions (re-exported from `ledger-proto`).
//! - [`verify`]: verification of tree heads, proofs, snapshots and watched streams against a
//!   trusted key, without trusting the node. Pure, no network.
//! - [`render`]: an entry as the JSON object the CLI prints and the observer page shows.

pub mod cluster;
pub mod connect;
pub mod pipeline;
pub mod render;
pub mod retry;
pub mod transfer;
pub mod verify;

use ledger_core::checkpoint::{SignedTreeHead, VerifyingKey};
use ledger_core::{Entry, Hash, Metadata, NewEntry};
use ledger_proto::context::v1 as pb;
use ledger_proto::ledger::v1 as lpb;
use lpb::append_pipeline_client::AppendPipelineClient;
use lpb::integrity_service_client::IntegrityServiceClient;
use lpb::snapshot_service_client::SnapshotServiceClient;
use pb::context_service_client::ContextServiceClient;
use thiserror::Error;
use tokio_stream::StreamExt;
use tonic::transport::Channel;

pub use connect::{Auth, ConnectOptions, TlsOptions, Transport};
pub use ledger_proto;
pub use ledger_proto::convert;
pub use pipeline::AppendPipeline;
pub use retry::RetryPolicy;

/// Largest message the client accepts or sends (snapshots of big contexts are single messages).
pub const MAX_MESSAGE_BYTES: usize = 1 << 30;

/// HTTP/2 flow-control window per stream the client grants the node.
pub const STREAM_WINDOW_BYTES: u32 = 8 << 20;
/// HTTP/2 flow-control window per connection the client grants the node.
pub const CONNECTION_WINDOW_BYTES: u32 = 16 << 20;
/// Largest HTTP/2 frame the client accepts.
pub const MAX_FRAME_BYTES: u32 = 1 << 20;

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
    /// The connection options are unusable (files, token).
    #[error("{0}")]
    Options(String),
    /// Reading or writing a local file or stream failed.
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
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
    inner: ContextServiceClient<Transport>,
    integrity: IntegrityServiceClient<Transport>,
    pipeline: AppendPipelineClient<Transport>,
    snapshots: SnapshotServiceClient<Transport>,
}

/// An event of a watch stream that carries tree heads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchItem {
    Entry(Entry),
    TreeHead(SignedTreeHead),
}

/// An inclusion proof as served, with the signed head it is valid for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InclusionProof {
    pub leaf_index: u64,
    pub tree_size: u64,
    pub leaf_hash: Hash,
    pub path: Vec<Hash>,
    pub tree_head: SignedTreeHead,
}

/// A consistency proof as served, with the signed heads of both sizes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsistencyProof {
    pub path: Vec<Hash>,
    pub first: SignedTreeHead,
    pub second: SignedTreeHead,
}

fn invalid(e: String) -> ClientError {
    ClientError::InvalidResponse(e)
}

impl LedgerClient {
    /// Connects to `addr` (`http://host:port`; a bare `host:port` gets `http://`), without TLS
    /// or token.
    pub async fn connect(addr: &str) -> Result<Self, ClientError> {
        Self::connect_with(addr, &ConnectOptions::default()).await
    }

    /// Connects to `addr` with TLS and a bearer token as `options` say.
    pub async fn connect_with(addr: &str, options: &ConnectOptions) -> Result<Self, ClientError> {
        let auth = options.auth()?;
        let endpoint = options.endpoint(addr)?;
        let url = endpoint.uri().to_string();
        let channel = endpoint
            .tcp_nodelay(true)
            // HTTP/2's default windows (64 KiB) make a multi-megabyte Get or snapshot wait for
            // a WINDOW_UPDATE round trip every 64 KiB; large frames cut per-frame work.
            .initial_stream_window_size(STREAM_WINDOW_BYTES)
            .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
            .max_frame_size(MAX_FRAME_BYTES)
            .connect()
            .await
            .map_err(|source| ClientError::Connect { addr: url, source })?;
        Ok(Self::from_channel_with(channel, auth))
    }

    /// A client over an existing channel.
    pub fn from_channel(channel: Channel) -> Self {
        Self::from_channel_with(channel, Auth::default())
    }

    /// A client over an existing channel whose requests carry `auth`'s token.
    pub fn from_channel_with(channel: Channel, auth: Auth) -> Self {
        let t = |ch: Channel| Transport::new(ch, auth.clone());
        LedgerClient {
            inner: ContextServiceClient::new(t(channel.clone()))
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            integrity: IntegrityServiceClient::new(t(channel.clone())),
            pipeline: AppendPipelineClient::new(t(channel.clone()))
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            snapshots: SnapshotServiceClient::new(t(channel))
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        }
    }

    /// The generated client, for calls this wrapper does not cover.
    pub fn raw(&self) -> ContextServiceClient<Transport> {
        self.inner.clone()
    }

    /// A handle for pipelined appends on this connection (`converge.ledger.v1.AppendPipeline`):
    /// the same operation as [`LedgerClient::append`], but concurrent appends share one
    /// stream instead of one HTTP/2 request each. Each handle opens its own stream on first use.
    pub fn pipeline(&self) -> AppendPipeline {
        AppendPipeline::new(self.pipeline.clone())
    }

    /// Appends one entry (one unary `ContextService/Append` call) and returns it as stored.
    pub async fn append(
        &self,
        context_id: &str,
        key: &str,
        payload: Vec<u8>,
        metadata: Metadata,
        received_lamport_clock: Option<u64>,
    ) -> Result<Entry, ClientError> {
        self.append_entry(NewEntry::new(
            context_id,
            key,
            payload,
            metadata,
            received_lamport_clock,
        ))
        .await
    }

    /// Appends `entry` with every option (an idempotency key, for one) in one unary call.
    pub async fn append_entry(&self, entry: NewEntry) -> Result<Entry, ClientError> {
        self.append_with_timeout(entry, None).await
    }

    /// One unary append, with a deadline for the whole call when `timeout` is set.
    pub(crate) async fn append_with_timeout(
        &self,
        entry: NewEntry,
        timeout: Option<std::time::Duration>,
    ) -> Result<Entry, ClientError> {
        let mut request = tonic::Request::new(convert::append_request_to_pb(entry));
        if let Some(t) = timeout {
            request.set_timeout(t);
        }
        let resp = self.raw().append(request).await?.into_inner();
        let entry = resp
            .entry
            .ok_or_else(|| ClientError::InvalidResponse("append response without entry".into()))?;
        convert::entry_from_pb(entry).map_err(ClientError::InvalidResponse)
    }

    /// Appends `items` to `context_id` in one AppendBatch call: all are stored, with
    /// consecutive sequences in this order, or none is. Returns the stored entries. Items'
    /// own `context_id`s are ignored; items with an idempotency key are refused
    /// (INVALID_ARGUMENT, before sending): batch items cannot carry one.
    pub async fn append_batch(
        &self,
        context_id: &str,
        items: Vec<NewEntry>,
    ) -> Result<Vec<Entry>, ClientError> {
        refuse_keyed_batch_items(&items)?;
        let resp = self
            .raw()
            .append_batch(convert::batch_request_to_pb(context_id, items))
            .await?
            .into_inner();
        resp.entries
            .into_iter()
            .map(convert::entry_from_pb)
            .collect::<Result<_, _>>()
            .map_err(ClientError::InvalidResponse)
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
                ..Default::default()
            })
            .await?
            .into_inner();
        Ok(stream.filter_map(|ev| match ev {
            Err(s) => Some(Err(ClientError::from(s))),
            // Only entries: tree heads are not requested here.
            Ok(ev) => ev
                .entry
                .map(|e| convert::entry_from_pb(e).map_err(ClientError::InvalidResponse)),
        }))
    }

    /// A stream of entries with sequence > `from_sequence`, interleaved with signed tree heads
    /// covering exactly the entries delivered so far (every `every_entries` entries or
    /// `every_ms` milliseconds; 0 = the node's default).
    pub async fn watch_with_tree_heads(
        &self,
        context_id: &str,
        from_sequence: u64,
        every_entries: u32,
        every_ms: u32,
    ) -> Result<impl tokio_stream::Stream<Item = Result<WatchItem, ClientError>> + use<>, ClientError>
    {
        let stream = self
            .raw()
            .watch(pb::WatchRequest {
                context_id: context_id.to_owned(),
                key: String::new(),
                from_sequence,
                include_tree_heads: true,
                tree_head_every_entries: every_entries,
                tree_head_every_ms: every_ms,
            })
            .await?
            .into_inner();
        Ok(stream.map(|ev| {
            let ev = ev?;
            match (ev.entry, ev.tree_head) {
                (Some(e), None) => convert::entry_from_pb(e)
                    .map(WatchItem::Entry)
                    .map_err(invalid),
                (None, Some(h)) => convert::tree_head_from_pb(h)
                    .map(WatchItem::TreeHead)
                    .map_err(invalid),
                _ => Err(invalid(
                    "watch event must carry exactly one of entry and tree_head".into(),
                )),
            }
        }))
    }

    /// The context's signed tree head.
    pub async fn tree_head(&self, context_id: &str) -> Result<SignedTreeHead, ClientError> {
        let h = self
            .integrity
            .clone()
            .get_tree_head(lpb::GetTreeHeadRequest {
                context_id: context_id.to_owned(),
            })
            .await?
            .into_inner();
        convert::tree_head_from_pb(h).map_err(invalid)
    }

    /// Inclusion proof of entry `sequence` in the tree of `tree_size` (0 = current).
    pub async fn inclusion_proof(
        &self,
        context_id: &str,
        sequence: u64,
        tree_size: u64,
    ) -> Result<InclusionProof, ClientError> {
        let p = self
            .integrity
            .clone()
            .get_inclusion_proof(lpb::GetInclusionProofRequest {
                context_id: context_id.to_owned(),
                sequence,
                tree_size,
            })
            .await?
            .into_inner();
        let head = p
            .tree_head
            .ok_or_else(|| invalid("inclusion proof without tree head".into()))?;
        Ok(InclusionProof {
            leaf_index: p.leaf_index,
            tree_size: p.tree_size,
            leaf_hash: Hash::from_slice(&p.leaf_hash)
                .ok_or_else(|| invalid("leaf hash is not 32 bytes".into()))?,
            path: convert::hashes_from_pb(p.audit_path, "audit_path").map_err(invalid)?,
            tree_head: convert::tree_head_from_pb(head).map_err(invalid)?,
        })
    }

    /// Consistency proof from `first_size` to `second_size` (0 = current).
    pub async fn consistency_proof(
        &self,
        context_id: &str,
        first_size: u64,
        second_size: u64,
    ) -> Result<ConsistencyProof, ClientError> {
        let p = self
            .integrity
            .clone()
            .get_consistency_proof(lpb::GetConsistencyProofRequest {
                context_id: context_id.to_owned(),
                first_size,
                second_size,
            })
            .await?
            .into_inner();
        let head = |h: Option<lpb::SignedTreeHead>, which: &str| {
            h.ok_or_else(|| invalid(format!("consistency proof without {which} tree head")))
                .and_then(|h| convert::tree_head_from_pb(h).map_err(invalid))
        };
        Ok(ConsistencyProof {
            path: convert::hashes_from_pb(p.path, "path").map_err(invalid)?,
            first: head(p.first_tree_head, "first")?,
            second: head(p.second_tree_head, "second")?,
        })
    }

    /// The node's signing key (trust on first use; pin it for real verification).
    pub async fn public_key(&self) -> Result<(String, VerifyingKey), ClientError> {
        let k = self
            .integrity
            .clone()
            .get_public_key(lpb::GetPublicKeyRequest {})
            .await?
            .into_inner();
        let bytes: [u8; 32] = k
            .public_key
            .as_slice()
            .try_into()
            .map_err(|_| invalid("public key is not 32 bytes".into()))?;
        let key = VerifyingKey::from_bytes(&bytes)
            .map_err(|e| invalid(format!("public key is invalid: {e}")))?;
        Ok((k.key_name, key))
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

/// Batch items cannot carry idempotency keys (the node refuses them with this message too).
pub(crate) fn refuse_keyed_batch_items(items: &[NewEntry]) -> Result<(), ClientError> {
    match items.iter().position(|e| e.idempotency_key.is_some()) {
        Some(index) => Err(ClientError::Status(tonic::Status::invalid_argument(
            ledger_core::validate::ValidationError::BatchItemIdempotencyKey { index }.to_string(),
        ))),
        None => Ok(()),
    }
}
