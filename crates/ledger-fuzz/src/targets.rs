//! The fuzz target bodies. Every one takes arbitrary bytes and returns normally.

use ledger_core::checkpoint::{self, SignedTreeHead, VerifyingKey};
use ledger_core::snapshot::{self, SnapshotDecoder};
use ledger_core::{Hash, encoding, validate};
use ledger_proto::context::v1 as pb;
use ledger_proto::ledger::v1 as lpb;
use prost::Message;

/// Largest entry a streamed load accepts in these targets (the node uses its payload limit).
const MAX_ENTRY_BYTES: usize = 1 << 20;

/// A target body.
pub type Target = fn(&[u8]);

/// Every target: (name, body).
pub const TARGETS: &[(&str, Target)] = &[
    ("snapshot_decode", snapshot_decode),
    ("snapshot_stream", snapshot_stream),
    ("leaf_decode", leaf_decode),
    ("checkpoint_parse", checkpoint_parse),
    ("request_decode", request_decode),
    ("digest_decode", digest_decode),
];

/// Runs the target called `name` on `data`. Panics on an unknown name.
pub fn run(name: &str, data: &[u8]) {
    let (_, f) = TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no fuzz target {name:?}"));
    f(data);
}

/// A whole snapshot (unary Load): decode; what decodes must re-encode to the same bytes.
pub fn snapshot_decode(data: &[u8]) {
    let _ = snapshot::peek_header(data);
    if let Ok(s) = snapshot::decode(data) {
        let again = snapshot::encode(&s.context_id, s.created_at_ns, &s.entries)
            .expect("a decoded snapshot re-encodes");
        assert_eq!(again, data, "decode then encode is the identity");
    }
}

/// A streamed snapshot (LoadStream): the first byte picks the piece size, the rest is fed in
/// pieces; the decoder never buffers more than one entry's bound.
pub fn snapshot_stream(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let piece = usize::from(first % 64) + 1;
    let mut d = SnapshotDecoder::new().with_max_entry_bytes(MAX_ENTRY_BYTES);
    let mut out = Vec::new();
    for chunk in rest.chunks(piece) {
        if d.feed(chunk, &mut out).is_err() {
            return;
        }
        assert_eq!(out.len() as u64, d.entries_decoded());
    }
    if let Ok(header) = d.finish() {
        assert_eq!(header.tree_size, out.len() as u64);
        let whole = snapshot::decode(rest).expect("what streams in decodes whole");
        assert_eq!(whole.entries, out);
    }
}

/// The canonical leaf encoding: what decodes re-encodes to the same bytes and hash.
pub fn leaf_decode(data: &[u8]) {
    if let Ok(e) = encoding::decode_leaf_input(data) {
        assert_eq!(encoding::encode_leaf_input(&e), data);
        assert_eq!(e.compute_content_hash(), e.content_hash);
    }
}

/// Checkpoint text and signed tree heads built around it.
pub fn checkpoint_parse(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(cp) = checkpoint::parse_checkpoint(text) {
        assert_eq!(
            checkpoint::checkpoint_text(&cp.origin, cp.tree_size, &cp.root),
            text
        );
    }
    // A head carrying this text must never verify under a key that did not sign it.
    let key = VerifyingKey::from_bytes(&[
        0xd7, 0x5a, 0x98, 0x01, 0x82, 0xb1, 0x0a, 0xb7, 0xd5, 0x4b, 0xfe, 0xd3, 0xc9, 0x64, 0x07,
        0x3a, 0x0e, 0xe1, 0x72, 0xf3, 0xda, 0xa6, 0x23, 0x25, 0xaf, 0x02, 0x1a, 0x68, 0xf7, 0x07,
        0x51, 0x1a,
    ])
    .expect("RFC 8032 test key");
    let head = SignedTreeHead {
        context_id: "c".into(),
        tree_size: 1,
        root: Hash::default(),
        lamport_clock: 0,
        timestamp_ns: 0,
        key_name: "k".into(),
        key_id: checkpoint::key_id("k", &key),
        checkpoint: text.to_owned(),
        signature: [0u8; 64],
    };
    assert!(head.verify(&key).is_err());
}

/// Every public request message, as the node takes it: decoded (the node's decoder is prost's
/// with tonic's framing), converted to domain types and validated.
pub fn request_decode(data: &[u8]) {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let limits = validate::Limits::default();
    match which % 10 {
        0 => {
            if let Ok(r) = pb::AppendRequest::decode(body) {
                append(r, &limits);
            }
        }
        1 => {
            if let Ok(r) = pb::GetRequest::decode(body) {
                let _ = validate::validate_context_id(&r.context_id);
                let _ = validate::validate_key_filter(&r.key);
            }
        }
        2 => {
            if let Ok(r) = pb::WatchRequest::decode(body) {
                let _ = validate::validate_context_id(&r.context_id);
                let _ = validate::validate_key_filter(&r.key);
            }
        }
        3 => {
            if let Ok(r) = pb::LoadRequest::decode(body) {
                let _ = validate::validate_context_id(&r.context_id);
                snapshot_decode(&r.snapshot);
            }
        }
        4 => {
            if let Ok(r) = lpb::AppendStreamRequest::decode(body)
                && let Some(a) = r.append
            {
                append(a, &limits);
            }
        }
        5 => {
            if let Ok(r) = lpb::LoadStreamRequest::decode(body) {
                let _ = validate::validate_context_id(&r.context_id);
            }
        }
        6 => {
            let _ = lpb::GetInclusionProofRequest::decode(body);
            let _ = lpb::GetConsistencyProofRequest::decode(body);
        }
        7 => {
            if let Ok(h) = lpb::SignedTreeHead::decode(body) {
                let _ = ledger_proto::convert::tree_head_from_pb(h);
            }
        }
        8 => {
            if let Ok(e) = pb::Entry::decode(body) {
                let _ = ledger_proto::convert::entry_from_pb(e);
            }
        }
        _ => {
            let _ = lpb::SnapshotStreamRequest::decode(body);
            let _ = pb::SnapshotRequest::decode(body);
        }
    }
}

fn append(r: pb::AppendRequest, limits: &validate::Limits) {
    let e = ledger_proto::convert::append_request_from_pb(r);
    let _ = validate::validate_append(
        &e.context_id,
        &e.key,
        &e.payload,
        &e.metadata,
        e.received_lamport_clock,
        limits,
    );
    if let Some(k) = &e.idempotency_key {
        let _ = validate::validate_idempotency_key(k);
    }
}

/// The cluster's anti-entropy digest messages (ClusterService/Digest): what decodes re-encodes.
pub fn digest_decode(data: &[u8]) {
    if let Ok(m) = ledger_replication::digest::DigestMessage::decode(data) {
        let again = m.encode();
        let back = ledger_replication::digest::DigestMessage::decode(&again)
            .expect("an encoded digest message decodes");
        assert_eq!(back, m);
    }
}
