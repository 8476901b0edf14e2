//! Replication messages on the wire: a protocol [`Message`] in a `cluster.v1.Envelope`.
//!
//! The envelope names the context and the sending voter; the message's control part (epochs,
//! heads, histories: small) travels as JSON in `control`, and an entry batch's entries as the
//! public API's `Entry` messages, exactly as stored, with the sender's Merkle root after them.
//! The receiver recomputes every content hash and the root before it stores anything
//! (`Ledger::apply`), so nothing here is trusted.

use ledger_core::{Entry, Hash};
use ledger_proto::cluster::v1 as cpb;
use ledger_proto::convert::{entry_from_pb, entry_to_pb};
use ledger_replication::{
    Entries, EntriesHeader, Epoch, Head, Message, NodeId, PromiseAnswer, Voter,
};
use serde::{Deserialize, Serialize};

/// A message without its entries.
#[derive(Debug, Serialize, Deserialize)]
enum Control {
    /// First envelope on a replication stream: who is at the other end.
    Hello,
    PromiseRequest {
        epoch: Epoch,
    },
    PromiseReply {
        epoch: Epoch,
        answer: PromiseAnswer,
    },
    Entries {
        header: EntriesHeader,
        prev: u64,
    },
    Cursor(Head),
    FetchRequest {
        epoch: Epoch,
        after: u64,
        upto: u64,
    },
}

/// An idempotency key recorded with a shipped entry: (sequence, key, fingerprint).
pub type KeyRecord = (u64, String, Hash);

/// Puts the idempotency keys of a batch's entries on its envelope.
pub fn with_keys(mut env: cpb::Envelope, keys: Vec<KeyRecord>) -> cpb::Envelope {
    env.idempotency_keys = keys
        .into_iter()
        .map(|(sequence, key, fingerprint)| cpb::IdempotencyKey {
            sequence,
            key,
            fingerprint: fingerprint.as_bytes().to_vec(),
        })
        .collect();
    env
}

/// A decoded envelope.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // consumed at once, never stored
pub enum Inbound {
    Hello {
        from: Voter,
    },
    Message {
        context_id: String,
        from: Voter,
        message: Message<Entry>,
        /// Idempotency keys of the batch's entries (empty for other messages).
        keys: Vec<KeyRecord>,
    },
}

fn envelope(context_id: &str, from: &Voter, control: &Control) -> cpb::Envelope {
    cpb::Envelope {
        context_id: context_id.to_owned(),
        from_node: from.node.as_str().to_owned(),
        from_incarnation: from.incarnation.0,
        control: serde_json::to_vec(control).expect("protocol types serialise"),
        entries: Vec::new(),
        root: Vec::new(),
        idempotency_keys: Vec::new(),
    }
}

/// The stream's first envelope.
pub fn hello(from: &Voter) -> cpb::Envelope {
    envelope("", from, &Control::Hello)
}

/// Encodes `message` about `context_id`, sent by `from`.
pub fn encode(context_id: &str, from: &Voter, message: &Message<Entry>) -> cpb::Envelope {
    match message {
        Message::PromiseRequest { epoch } => envelope(
            context_id,
            from,
            &Control::PromiseRequest {
                epoch: epoch.clone(),
            },
        ),
        Message::PromiseReply { epoch, answer } => envelope(
            context_id,
            from,
            &Control::PromiseReply {
                epoch: epoch.clone(),
                answer: answer.clone(),
            },
        ),
        Message::Cursor(head) => envelope(context_id, from, &Control::Cursor(head.clone())),
        Message::FetchRequest { epoch, after, upto } => envelope(
            context_id,
            from,
            &Control::FetchRequest {
                epoch: epoch.clone(),
                after: *after,
                upto: *upto,
            },
        ),
        Message::Entries(batch) => {
            let mut env = envelope(
                context_id,
                from,
                &Control::Entries {
                    header: batch.header.clone(),
                    prev: batch.prev,
                },
            );
            env.entries = batch.entries.iter().map(entry_to_pb).collect();
            env.root = batch
                .root
                .map(|r| r.as_bytes().to_vec())
                .unwrap_or_default();
            env
        }
    }
}

/// Decodes an envelope; an error names what is malformed (the stream is then dropped).
pub fn decode(env: cpb::Envelope) -> Result<Inbound, String> {
    let from = Voter {
        node: NodeId::new(env.from_node),
        incarnation: ledger_replication::Incarnation(env.from_incarnation),
    };
    let control: Control = serde_json::from_slice(&env.control)
        .map_err(|e| format!("undecodable replication message: {e}"))?;
    let message = match control {
        Control::Hello => return Ok(Inbound::Hello { from }),
        Control::PromiseRequest { epoch } => Message::PromiseRequest { epoch },
        Control::PromiseReply { epoch, answer } => Message::PromiseReply { epoch, answer },
        Control::Cursor(head) => Message::Cursor(head),
        Control::FetchRequest { epoch, after, upto } => {
            Message::FetchRequest { epoch, after, upto }
        }
        Control::Entries { header, prev } => {
            let entries = env
                .entries
                .into_iter()
                .map(entry_from_pb)
                .collect::<Result<Vec<_>, _>>()?;
            let root = match env.root.len() {
                0 => None,
                32 => Hash::from_slice(&env.root),
                n => return Err(format!("a batch root of {n} bytes (expected 32)")),
            };
            Message::Entries(Entries {
                header,
                prev,
                entries,
                root,
            })
        }
    };
    if env.context_id.is_empty() {
        return Err("a replication message without a context id".into());
    }
    let keys = env
        .idempotency_keys
        .into_iter()
        .map(|k| {
            Hash::from_slice(&k.fingerprint)
                .map(|fp| (k.sequence, k.key, fp))
                .ok_or_else(|| "an idempotency fingerprint that is not 32 bytes".to_owned())
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Inbound::Message {
        context_id: env.context_id,
        from,
        message,
        keys,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ledger_replication::EpochHistory;

    #[test]
    fn messages_round_trip() {
        let me = Voter::new("n1", 7);
        let epoch = Epoch::new(3, me.clone());
        let head = Head {
            promised: Some(epoch.clone()),
            size: 2,
            history: EpochHistory::new(),
            commit_index: 1,
        };
        let e = Entry::new(
            "id".into(),
            "facts".into(),
            b"x".to_vec(),
            3,
            5,
            Default::default(),
            9,
        );
        let batch = Message::Entries(Entries {
            header: EntriesHeader {
                kind: ledger_replication::EntriesKind::Replicate,
                epoch: epoch.clone(),
                head: head.clone(),
                commit_index: 1,
            },
            prev: 2,
            entries: vec![e],
            root: Some(Hash([4; 32])),
        });
        for m in [
            Message::PromiseRequest {
                epoch: epoch.clone(),
            },
            Message::Cursor(head),
            Message::FetchRequest {
                epoch,
                after: 1,
                upto: 4,
            },
            batch,
        ] {
            let env = encode("ctx", &me, &m);
            match decode(env).unwrap() {
                Inbound::Message {
                    context_id,
                    from,
                    message,
                    ..
                } => {
                    assert_eq!((context_id.as_str(), &from), ("ctx", &me));
                    assert_eq!(message, m);
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(matches!(decode(hello(&me)).unwrap(), Inbound::Hello { .. }));
    }

    #[test]
    fn malformed_envelopes_are_refused() {
        let mut env = hello(&Voter::new("n1", 1));
        env.control = b"{".to_vec();
        assert!(decode(env).unwrap_err().contains("undecodable"));
    }
}
