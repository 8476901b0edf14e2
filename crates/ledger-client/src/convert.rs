//! Conversions between wire types (`ledger-proto`) and the domain model (`ledger-core`).
//! The only place they meet.

use ledger_core::{Entry, Hash, Metadata};
use ledger_proto::context::v1 as pb;

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
