//! Placement view records in the entries of the view log's context: each entry's payload is one
//! `cluster.v1.ViewRecord` (protobuf), golden-bytes tested below.

use ledger_proto::cluster::v1 as cpb;
use ledger_replication::views::{ViewChange, ViewRecord};
use ledger_replication::{Incarnation, Member, MemberState, NodeId, Role};
use prost::Message;

/// Why a payload is not a view record.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ViewCodecError {
    #[error("not a view record: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("view record without {0}")]
    Missing(&'static str),
    #[error("unknown role {0} in a view record (0 = member, 1 = mirror)")]
    Role(u32),
}

/// The payload of a view record.
pub fn encode(record: &ViewRecord) -> Vec<u8> {
    let record = match record {
        ViewRecord::Change { version, change } => {
            let change = match change {
                ViewChange::Bootstrap(members) => {
                    cpb::view_change::Change::Bootstrap(cpb::ViewMembers {
                        members: members.iter().map(member_pb).collect(),
                    })
                }
                ViewChange::Join(m) => cpb::view_change::Change::Join(member_pb(m)),
                ViewChange::Update(m) => cpb::view_change::Change::Update(member_pb(m)),
                ViewChange::Leave(id) => cpb::view_change::Change::Leave(id.to_string()),
            };
            cpb::view_record::Record::Change(cpb::ViewChange {
                version: *version,
                change: Some(change),
            })
        }
        ViewRecord::Settled {
            node,
            incarnation,
            version,
        } => cpb::view_record::Record::Settled(cpb::ViewSettled {
            node_id: node.to_string(),
            incarnation: *incarnation,
            version: *version,
        }),
    };
    cpb::ViewRecord {
        record: Some(record),
    }
    .encode_to_vec()
}

/// The view record in a payload.
pub fn decode(payload: &[u8]) -> Result<ViewRecord, ViewCodecError> {
    let record = cpb::ViewRecord::decode(payload)?
        .record
        .ok_or(ViewCodecError::Missing("a record"))?;
    Ok(match record {
        cpb::view_record::Record::Change(c) => {
            let change = match c.change.ok_or(ViewCodecError::Missing("a change"))? {
                cpb::view_change::Change::Bootstrap(ms) => ViewChange::Bootstrap(
                    ms.members
                        .into_iter()
                        .map(member_of)
                        .collect::<Result<_, _>>()?,
                ),
                cpb::view_change::Change::Join(m) => ViewChange::Join(member_of(m)?),
                cpb::view_change::Change::Update(m) => ViewChange::Update(member_of(m)?),
                cpb::view_change::Change::Leave(id) => ViewChange::Leave(NodeId::new(id)),
            };
            ViewRecord::Change {
                version: c.version,
                change,
            }
        }
        cpb::view_record::Record::Settled(s) => ViewRecord::Settled {
            node: NodeId::new(s.node_id),
            incarnation: s.incarnation,
            version: s.version,
        },
    })
}

fn member_pb(m: &Member) -> cpb::ViewMember {
    cpb::ViewMember {
        node_id: m.id.to_string(),
        incarnation: m.incarnation.0,
        role: match m.role {
            Role::Member => 0,
            Role::Mirror => 1,
        },
        mirror_prefixes: m.mirror_prefixes.clone(),
    }
}

fn member_of(m: cpb::ViewMember) -> Result<Member, ViewCodecError> {
    let role = match m.role {
        0 => Role::Member,
        1 => Role::Mirror,
        other => return Err(ViewCodecError::Role(other)),
    };
    let mut member = Member::new(m.node_id, m.incarnation, role, MemberState::Alive)
        .with_mirror_prefixes(m.mirror_prefixes);
    member.incarnation = Incarnation(m.incarnation);
    Ok(member)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, inc: u64, role: Role) -> Member {
        Member::new(id, inc, role, MemberState::Alive)
    }

    #[test]
    fn every_record_round_trips() {
        let records = vec![
            ViewRecord::Change {
                version: 1,
                change: ViewChange::Bootstrap(vec![
                    member("a", 1, Role::Member),
                    member("m", 2, Role::Mirror).with_mirror_prefixes(vec!["obs-".into()]),
                ]),
            },
            ViewRecord::Change {
                version: 2,
                change: ViewChange::Join(member("d", 7, Role::Member)),
            },
            ViewRecord::Change {
                version: 3,
                change: ViewChange::Update(member("d", 8, Role::Mirror)),
            },
            ViewRecord::Change {
                version: 4,
                change: ViewChange::Leave(NodeId::new("a".to_owned())),
            },
            ViewRecord::Settled {
                node: NodeId::new("d".to_owned()),
                incarnation: 8,
                version: 4,
            },
        ];
        for r in records {
            assert_eq!(decode(&encode(&r)).unwrap(), r);
        }
    }

    #[test]
    fn golden_bytes() {
        let r = ViewRecord::Change {
            version: 2,
            change: ViewChange::Join(member("d", 7, Role::Mirror)),
        };
        // record.change (1) { version (1) = 2, join (3) { node_id (1) = "d", incarnation (2) = 7, role (3) = 1 } }
        assert_eq!(
            encode(&r),
            vec![
                0x0a, 0x0b, 0x08, 0x02, 0x1a, 0x07, 0x0a, 0x01, b'd', 0x10, 0x07, 0x18, 0x01
            ]
        );
        let s = ViewRecord::Settled {
            node: NodeId::new("b".to_owned()),
            incarnation: 1,
            version: 3,
        };
        assert_eq!(
            encode(&s),
            vec![0x12, 0x07, 0x0a, 0x01, b'b', 0x10, 0x01, 0x18, 0x03]
        );
    }

    #[test]
    fn garbage_and_empty_records_are_refused() {
        assert!(decode(&[0xff, 0xff]).is_err());
        assert!(matches!(decode(&[]), Err(ViewCodecError::Missing(_))));
        let no_change = cpb::ViewRecord {
            record: Some(cpb::view_record::Record::Change(cpb::ViewChange {
                version: 1,
                change: None,
            })),
        }
        .encode_to_vec();
        assert!(matches!(
            decode(&no_change),
            Err(ViewCodecError::Missing(_))
        ));
        let bad_role = cpb::ViewRecord {
            record: Some(cpb::view_record::Record::Change(cpb::ViewChange {
                version: 1,
                change: Some(cpb::view_change::Change::Join(cpb::ViewMember {
                    node_id: "x".into(),
                    incarnation: 1,
                    role: 9,
                    mirror_prefixes: vec![],
                })),
            })),
        }
        .encode_to_vec();
        assert!(matches!(decode(&bad_role), Err(ViewCodecError::Role(9))));
    }
}
