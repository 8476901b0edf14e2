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
        /// The claimant's placement view (absent: 0, no views).
        #[serde(default, skip_serializing_if = "is_zero")]
        view: u64,
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

fn is_zero(v: &u64) -> bool {
    *v == 0
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
        Message::PromiseRequest { epoch, view } => envelope(
            context_id,
            from,
            &Control::PromiseRequest {
                epoch: epoch.clone(),
                view: *view,
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
        Control::PromiseRequest { epoch, view } => Message::PromiseRequest { epoch, view },
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
                view: 0,
            },
            Message::PromiseRequest {
                epoch: epoch.clone(),
                view: 7,
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

/// The bytes every replication message has on the wire today, pinned: a change to the
/// encoding (a serde attribute, a renamed field or variant, another envelope field) fails
/// here instead of between two nodes of different builds. Fixed inputs, exact control JSON
/// and exact envelope bytes (protobuf, hex); each golden envelope also decodes back to its
/// message.
#[cfg(test)]
mod golden {
    use super::*;
    use ledger_replication::{EntriesKind, EpochHistory, EpochRecord, Incarnation, Quorum, Voter};
    use prost::Message as _;

    fn sender() -> Voter {
        Voter::new("n1", 7)
    }

    fn epoch() -> Epoch {
        Epoch::new(3, Voter::new("n2", 9))
    }

    fn head() -> Head {
        let history = EpochHistory::from_records(vec![EpochRecord {
            epoch: epoch(),
            start: 1,
            quorum: Quorum::new([Voter::new("n1", 7), Voter::new("n2", 9)]),
            committed: true,
        }])
        .unwrap();
        Head {
            promised: Some(epoch()),
            size: 2,
            history,
            commit_index: 1,
        }
    }

    fn entry() -> Entry {
        Entry::new(
            "id-3".into(),
            "facts".into(),
            b"x".to_vec(),
            3,
            5,
            [("a".to_owned(), "b".to_owned())].into_iter().collect(),
            9,
        )
    }

    /// The control JSON and the whole envelope's bytes (hex).
    fn bytes(env: &cpb::Envelope) -> (String, String) {
        (
            String::from_utf8(env.control.clone()).unwrap(),
            hex::encode(env.encode_to_vec()),
        )
    }

    /// `message` encodes to exactly `control` and `envelope`, and those bytes decode back.
    fn pinned(message: Message<Entry>, keys: Vec<KeyRecord>, control: &str, envelope: &str) {
        let env = with_keys(encode("ctx-1", &sender(), &message), keys.clone());
        assert_eq!(bytes(&env), (control.to_owned(), envelope.to_owned()));
        let wire = cpb::Envelope::decode(hex::decode(envelope).unwrap().as_slice()).unwrap();
        match decode(wire).unwrap() {
            Inbound::Message {
                context_id,
                from,
                message: decoded,
                keys: decoded_keys,
            } => {
                assert_eq!((context_id.as_str(), from), ("ctx-1", sender()));
                assert_eq!((decoded, decoded_keys), (message, keys));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn hello() {
        let env = super::hello(&sender());
        assert_eq!(
            bytes(&env),
            (
                r#""Hello""#.to_owned(),
                "12026e31180722072248656c6c6f22".to_owned()
            )
        );
        match decode(env).unwrap() {
            Inbound::Hello { from } => assert_eq!(from.incarnation, Incarnation(7)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn promise_request() {
        pinned(
            Message::PromiseRequest {
                epoch: epoch(),
                view: 0,
            },
            Vec::new(),
            r#"{"PromiseRequest":{"epoch":{"number":3,"writer":{"node":"n2","incarnation":9}}}}"#,
            concat!(
                "0a056374782d3112026e31180722507b2250726f6d69736552657175657374223a7b2265706f6368",
                "223a7b226e756d626572223a332c22777269746572223a7b226e6f6465223a226e32222c22696e63",
                "61726e6174696f6e223a397d7d7d7d",
            ),
        );
    }

    #[test]
    fn promise_reply_granted() {
        pinned(
            Message::PromiseReply {
                epoch: epoch(),
                answer: PromiseAnswer::Granted(head()),
            },
            Vec::new(),
            r#"{"PromiseReply":{"epoch":{"number":3,"writer":{"node":"n2","incarnation":9}},"answer":{"Granted":{"promised":{"number":3,"writer":{"node":"n2","incarnation":9}},"size":2,"history":{"records":[{"epoch":{"number":3,"writer":{"node":"n2","incarnation":9}},"start":1,"quorum":{"sets":[[{"node":"n1","incarnation":7},{"node":"n2","incarnation":9}]]},"committed":true}]},"commit_index":1}}}}"#,
            concat!(
                "0a056374782d3112026e3118072281037b2250726f6d6973655265706c79223a7b2265706f636822",
                "3a7b226e756d626572223a332c22777269746572223a7b226e6f6465223a226e32222c22696e6361",
                "726e6174696f6e223a397d7d2c22616e73776572223a7b224772616e746564223a7b2270726f6d69",
                "736564223a7b226e756d626572223a332c22777269746572223a7b226e6f6465223a226e32222c22",
                "696e6361726e6174696f6e223a397d7d2c2273697a65223a322c22686973746f7279223a7b227265",
                "636f726473223a5b7b2265706f6368223a7b226e756d626572223a332c22777269746572223a7b22",
                "6e6f6465223a226e32222c22696e6361726e6174696f6e223a397d7d2c227374617274223a312c22",
                "71756f72756d223a7b2273657473223a5b5b7b226e6f6465223a226e31222c22696e6361726e6174",
                "696f6e223a377d2c7b226e6f6465223a226e32222c22696e6361726e6174696f6e223a397d5d5d7d",
                "2c22636f6d6d6974746564223a747275657d5d7d2c22636f6d6d69745f696e646578223a317d7d7d",
                "7d",
            ),
        );
    }

    #[test]
    fn promise_reply_refused() {
        pinned(
            Message::PromiseReply {
                epoch: epoch(),
                answer: PromiseAnswer::Refused {
                    promised: Epoch::new(4, Voter::new("n3", 11)),
                },
            },
            Vec::new(),
            r#"{"PromiseReply":{"epoch":{"number":3,"writer":{"node":"n2","incarnation":9}},"answer":{"Refused":{"promised":{"number":4,"writer":{"node":"n3","incarnation":11}}}}}}"#,
            concat!(
                "0a056374782d3112026e31180722a5017b2250726f6d6973655265706c79223a7b2265706f636822",
                "3a7b226e756d626572223a332c22777269746572223a7b226e6f6465223a226e32222c22696e6361",
                "726e6174696f6e223a397d7d2c22616e73776572223a7b2252656675736564223a7b2270726f6d69",
                "736564223a7b226e756d626572223a342c22777269746572223a7b226e6f6465223a226e33222c22",
                "696e6361726e6174696f6e223a31317d7d7d7d7d7d",
            ),
        );
    }

    #[test]
    fn entries_replicated_with_root_and_keys() {
        pinned(
            Message::Entries(Entries {
                header: EntriesHeader {
                    kind: EntriesKind::Replicate,
                    epoch: epoch(),
                    head: head(),
                    commit_index: 1,
                },
                prev: 2,
                entries: vec![entry()],
                root: Some(Hash([4; 32])),
            }),
            vec![(3, "retry-1".to_owned(), Hash([6; 32]))],
            r#"{"Entries":{"header":{"kind":"Replicate","epoch":{"number":3,"writer":{"node":"n2","incarnation":9}},"head":{"promised":{"number":3,"writer":{"node":"n2","incarnation":9}},"size":2,"history":{"records":[{"epoch":{"number":3,"writer":{"node":"n2","incarnation":9}},"start":1,"quorum":{"sets":[[{"node":"n1","incarnation":7},{"node":"n2","incarnation":9}]]},"committed":true}]},"commit_index":1},"commit_index":1},"prev":2}}"#,
            concat!(
                "0a056374782d3112026e31180722a6037b22456e7472696573223a7b22686561646572223a7b226b",
                "696e64223a225265706c6963617465222c2265706f6368223a7b226e756d626572223a332c227772",
                "69746572223a7b226e6f6465223a226e32222c22696e6361726e6174696f6e223a397d7d2c226865",
                "6164223a7b2270726f6d69736564223a7b226e756d626572223a332c22777269746572223a7b226e",
                "6f6465223a226e32222c22696e6361726e6174696f6e223a397d7d2c2273697a65223a322c226869",
                "73746f7279223a7b227265636f726473223a5b7b2265706f6368223a7b226e756d626572223a332c",
                "22777269746572223a7b226e6f6465223a226e32222c22696e6361726e6174696f6e223a397d7d2c",
                "227374617274223a312c2271756f72756d223a7b2273657473223a5b5b7b226e6f6465223a226e31",
                "222c22696e6361726e6174696f6e223a377d2c7b226e6f6465223a226e32222c22696e6361726e61",
                "74696f6e223a397d5d5d7d2c22636f6d6d6974746564223a747275657d5d7d2c22636f6d6d69745f",
                "696e646578223a317d2c22636f6d6d69745f696e646578223a317d2c2270726576223a327d7d2a40",
                "0a0469642d33120566616374731a01782003280532060a01611201623809422086c3fd979af6d4a6",
                "3d0a5adca668e295860469091f7299e1be28be629873c84232200404040404040404040404040404",
                "0404040404040404040404040404040404043a2d0803120772657472792d311a2006060606060606",
                "06060606060606060606060606060606060606060606060606",
            ),
        );
    }

    #[test]
    fn entries_fetched_heartbeat_without_entries() {
        pinned(
            Message::Entries(Entries {
                header: EntriesHeader {
                    kind: EntriesKind::Fetched,
                    epoch: epoch(),
                    head: head(),
                    commit_index: 0,
                },
                prev: 2,
                entries: Vec::new(),
                root: None,
            }),
            Vec::new(),
            r#"{"Entries":{"header":{"kind":"Fetched","epoch":{"number":3,"writer":{"node":"n2","incarnation":9}},"head":{"promised":{"number":3,"writer":{"node":"n2","incarnation":9}},"size":2,"history":{"records":[{"epoch":{"number":3,"writer":{"node":"n2","incarnation":9}},"start":1,"quorum":{"sets":[[{"node":"n1","incarnation":7},{"node":"n2","incarnation":9}]]},"committed":true}]},"commit_index":1},"commit_index":0},"prev":2}}"#,
            concat!(
                "0a056374782d3112026e31180722a4037b22456e7472696573223a7b22686561646572223a7b226b",
                "696e64223a2246657463686564222c2265706f6368223a7b226e756d626572223a332c2277726974",
                "6572223a7b226e6f6465223a226e32222c22696e6361726e6174696f6e223a397d7d2c2268656164",
                "223a7b2270726f6d69736564223a7b226e756d626572223a332c22777269746572223a7b226e6f64",
                "65223a226e32222c22696e6361726e6174696f6e223a397d7d2c2273697a65223a322c2268697374",
                "6f7279223a7b227265636f726473223a5b7b2265706f6368223a7b226e756d626572223a332c2277",
                "7269746572223a7b226e6f6465223a226e32222c22696e6361726e6174696f6e223a397d7d2c2273",
                "74617274223a312c2271756f72756d223a7b2273657473223a5b5b7b226e6f6465223a226e31222c",
                "22696e6361726e6174696f6e223a377d2c7b226e6f6465223a226e32222c22696e6361726e617469",
                "6f6e223a397d5d5d7d2c22636f6d6d6974746564223a747275657d5d7d2c22636f6d6d69745f696e",
                "646578223a317d2c22636f6d6d69745f696e646578223a307d2c2270726576223a327d7d",
            ),
        );
    }

    #[test]
    fn cursor() {
        pinned(
            Message::Cursor(head()),
            Vec::new(),
            r#"{"Cursor":{"promised":{"number":3,"writer":{"node":"n2","incarnation":9}},"size":2,"history":{"records":[{"epoch":{"number":3,"writer":{"node":"n2","incarnation":9}},"start":1,"quorum":{"sets":[[{"node":"n1","incarnation":7},{"node":"n2","incarnation":9}]]},"committed":true}]},"commit_index":1}}"#,
            concat!(
                "0a056374782d3112026e31180722a8027b22437572736f72223a7b2270726f6d69736564223a7b22",
                "6e756d626572223a332c22777269746572223a7b226e6f6465223a226e32222c22696e6361726e61",
                "74696f6e223a397d7d2c2273697a65223a322c22686973746f7279223a7b227265636f726473223a",
                "5b7b2265706f6368223a7b226e756d626572223a332c22777269746572223a7b226e6f6465223a22",
                "6e32222c22696e6361726e6174696f6e223a397d7d2c227374617274223a312c2271756f72756d22",
                "3a7b2273657473223a5b5b7b226e6f6465223a226e31222c22696e6361726e6174696f6e223a377d",
                "2c7b226e6f6465223a226e32222c22696e6361726e6174696f6e223a397d5d5d7d2c22636f6d6d69",
                "74746564223a747275657d5d7d2c22636f6d6d69745f696e646578223a317d7d",
            ),
        );
    }

    #[test]
    fn cursor_of_an_empty_replica() {
        let empty = Head {
            promised: None,
            size: 0,
            history: EpochHistory::new(),
            commit_index: 0,
        };
        pinned(
            Message::Cursor(empty),
            Vec::new(),
            r#"{"Cursor":{"promised":null,"size":0,"history":{"records":[]},"commit_index":0}}"#,
            concat!(
                "0a056374782d3112026e311807224f7b22437572736f72223a7b2270726f6d69736564223a6e756c",
                "6c2c2273697a65223a302c22686973746f7279223a7b227265636f726473223a5b5d7d2c22636f6d",
                "6d69745f696e646578223a307d7d",
            ),
        );
    }

    #[test]
    fn fetch_request() {
        pinned(
            Message::FetchRequest {
                epoch: epoch(),
                after: 1,
                upto: 4,
            },
            Vec::new(),
            r#"{"FetchRequest":{"epoch":{"number":3,"writer":{"node":"n2","incarnation":9}},"after":1,"upto":4}}"#,
            concat!(
                "0a056374782d3112026e31180722617b22466574636852657175657374223a7b2265706f6368223a",
                "7b226e756d626572223a332c22777269746572223a7b226e6f6465223a226e32222c22696e636172",
                "6e6174696f6e223a397d7d2c226166746572223a312c227570746f223a347d7d",
            ),
        );
    }
}
