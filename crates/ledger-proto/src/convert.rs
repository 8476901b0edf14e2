//! Conversions between wire types (`ledger-proto`) and the domain model (`ledger-core`).
//! The only place they meet.

use crate::context::v1 as pb;
use crate::ledger::v1 as lpb;
use ledger_core::{Entry, Hash, Metadata, NewEntry};

/// Domain entry → wire entry.
pub fn entry_to_pb(e: &Entry) -> pb::Entry {
    pb::Entry {
        id: e.id.clone(),
        key: e.key.clone(),
        payload: e.payload.clone(),
        sequence: e.sequence,
        appended_at_ns: e.appended_at_ns,
        metadata: e
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        lamport_clock: e.lamport_clock,
        content_hash: e.content_hash.as_bytes().to_vec(),
    }
}

/// Domain entry → wire entry, moving the fields (no copy of the payload).
pub fn entry_into_pb(e: Entry) -> pb::Entry {
    pb::Entry {
        content_hash: e.content_hash.as_bytes().to_vec(),
        id: e.id,
        key: e.key,
        payload: e.payload,
        sequence: e.sequence,
        appended_at_ns: e.appended_at_ns,
        metadata: e.metadata.into_iter().collect(),
        lamport_clock: e.lamport_clock,
    }
}

/// The wire request of one append (unary `Append` and pipelined `AppendStream` alike).
pub fn append_request_to_pb(e: NewEntry) -> pb::AppendRequest {
    pb::AppendRequest {
        context_id: e.context_id,
        key: e.key,
        payload: e.payload,
        metadata: e.metadata.into_iter().collect(),
        received_lamport_clock: e.received_lamport_clock,
        idempotency_key: e.idempotency_key,
    }
}

/// Wire append request → domain append (validated later, by the ledger).
pub fn append_request_from_pb(r: pb::AppendRequest) -> NewEntry {
    NewEntry {
        context_id: r.context_id,
        key: r.key,
        payload: r.payload,
        metadata: r.metadata.into_iter().collect(),
        received_lamport_clock: r.received_lamport_clock,
        idempotency_key: r.idempotency_key,
    }
}

/// The wire request of a batch append to `context_id`. Items' own `context_id`s are dropped
/// (the batch has one), and so are idempotency keys, which batch items cannot carry: callers
/// refuse such items before converting.
pub fn batch_request_to_pb(context_id: &str, items: Vec<NewEntry>) -> pb::AppendBatchRequest {
    pb::AppendBatchRequest {
        context_id: context_id.to_owned(),
        items: items
            .into_iter()
            .map(|e| pb::AppendBatchItem {
                key: e.key,
                payload: e.payload,
                metadata: e.metadata.into_iter().collect(),
                received_lamport_clock: e.received_lamport_clock,
            })
            .collect(),
    }
}

/// Wire batch request → the batch's context and its appends (validated later, by the ledger).
pub fn batch_request_from_pb(r: pb::AppendBatchRequest) -> (String, Vec<NewEntry>) {
    let items = r
        .items
        .into_iter()
        .map(|i| NewEntry {
            context_id: r.context_id.clone(),
            key: i.key,
            payload: i.payload,
            metadata: i.metadata.into_iter().collect(),
            received_lamport_clock: i.received_lamport_clock,
            idempotency_key: None,
        })
        .collect();
    (r.context_id, items)
}

/// Stored batch entries (in order, consecutive) → the wire response.
pub fn batch_response_to_pb<'a>(
    entries: impl IntoIterator<Item = &'a Entry>,
) -> pb::AppendBatchResponse {
    let entries: Vec<pb::Entry> = entries.into_iter().map(entry_to_pb).collect();
    pb::AppendBatchResponse {
        first_sequence: entries.first().map_or(0, |e| e.sequence),
        last_sequence: entries.last().map_or(0, |e| e.sequence),
        entries,
    }
}

/// Wire entry → domain entry. The content hash is taken as sent (32 bytes); use
/// [`Entry::verify_content_hash`] to check it against the fields.
pub fn entry_from_pb(e: pb::Entry) -> Result<Entry, String> {
    let content_hash = Hash::from_slice(&e.content_hash).ok_or_else(|| {
        format!(
            "entry {} has a content hash of {} bytes, expected 32",
            e.sequence,
            e.content_hash.len()
        )
    })?;
    Ok(Entry {
        id: e.id,
        key: e.key,
        payload: e.payload,
        sequence: e.sequence,
        appended_at_ns: e.appended_at_ns,
        metadata: e.metadata.into_iter().collect::<Metadata>(),
        lamport_clock: e.lamport_clock,
        content_hash,
    })
}

use ledger_core::checkpoint::SignedTreeHead;

/// Domain tree head → wire tree head.
pub fn tree_head_to_pb(h: &SignedTreeHead) -> lpb::SignedTreeHead {
    lpb::SignedTreeHead {
        context_id: h.context_id.clone(),
        tree_size: h.tree_size,
        root_hash: h.root.as_bytes().to_vec(),
        lamport_clock: h.lamport_clock,
        timestamp_ns: h.timestamp_ns,
        key_id: ledger_core::checkpoint::hex4(&h.key_id),
        signature: h.signature.to_vec(),
        checkpoint: h.checkpoint.clone(),
        key_name: h.key_name.clone(),
        note: h.note(),
    }
}

/// Wire tree head → domain tree head (shapes checked; the signature is not verified here).
pub fn tree_head_from_pb(h: lpb::SignedTreeHead) -> Result<SignedTreeHead, String> {
    let root = Hash::from_slice(&h.root_hash)
        .ok_or_else(|| format!("tree head root is {} bytes, expected 32", h.root_hash.len()))?;
    let signature: [u8; 64] = h.signature.as_slice().try_into().map_err(|_| {
        format!(
            "tree head signature is {} bytes, expected 64",
            h.signature.len()
        )
    })?;
    let id = Hash::from_hex(&format!("{:0<64}", h.key_id))
        .filter(|_| h.key_id.len() == 8)
        .ok_or_else(|| format!("tree head key id {:?} is not 8 hex characters", h.key_id))?;
    Ok(SignedTreeHead {
        context_id: h.context_id,
        tree_size: h.tree_size,
        root,
        lamport_clock: h.lamport_clock,
        timestamp_ns: h.timestamp_ns,
        key_name: h.key_name,
        key_id: [id.0[0], id.0[1], id.0[2], id.0[3]],
        checkpoint: h.checkpoint,
        signature,
    })
}

/// A list of 32-byte hashes from the wire.
pub fn hashes_from_pb(list: Vec<Vec<u8>>, what: &str) -> Result<Vec<Hash>, String> {
    list.iter()
        .enumerate()
        .map(|(i, b)| {
            Hash::from_slice(b)
                .ok_or_else(|| format!("{what}[{i}] is {} bytes, expected 32", b.len()))
        })
        .collect()
}
