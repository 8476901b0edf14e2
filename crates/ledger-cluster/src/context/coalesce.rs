//! [`coalesce`]: the commands of several peer messages carried out with fewer storage round
//! trips.

use ledger_core::{Entry, Hash};
use ledger_replication::{Command, Message};

/// The same effects as carrying out `cmds` in order, with fewer storage round trips:
/// consecutive `Append`s of consecutive entries separated only by `Send`s become one `Append`
/// (the `Send`s move after it: they only wait longer, which the protocol allows: a message
/// goes out after the storage commands before it are durable), and of several cursors to one
/// node among those `Send`s only the last goes out (a later cursor says everything an earlier
/// one did: a replica's log and promise only grow between them).
pub(crate) fn coalesce(cmds: Vec<Command<Entry>>) -> Vec<Command<Entry>> {
    let mut out = Vec::with_capacity(cmds.len());
    let mut pending: Option<(Vec<Entry>, Option<Hash>)> = None;
    let mut held: Vec<Command<Entry>> = Vec::new();
    fn flush(
        out: &mut Vec<Command<Entry>>,
        pending: &mut Option<(Vec<Entry>, Option<Hash>)>,
        held: &mut Vec<Command<Entry>>,
    ) {
        if let Some((entries, expected_root)) = pending.take() {
            out.push(Command::Append {
                entries,
                expected_root,
            });
        }
        let mut last_cursor = std::collections::HashMap::new();
        for (i, c) in held.iter().enumerate() {
            if let Command::Send {
                to,
                message: Message::Cursor(_),
            } = c
            {
                last_cursor.insert(to.clone(), i);
            }
        }
        for (i, c) in held.drain(..).enumerate() {
            let superseded = matches!(
                &c,
                Command::Send { to, message: Message::Cursor(_) } if last_cursor[to] != i
            );
            if !superseded {
                out.push(c);
            }
        }
    }
    for c in cmds {
        match c {
            Command::Append {
                entries,
                expected_root,
            } => {
                let joins = pending.as_ref().is_some_and(|(have, root)| {
                    let contiguous = match (have.last(), entries.first()) {
                        (Some(a), Some(b)) => a.sequence + 1 == b.sequence,
                        _ => false,
                    };
                    // The earlier root is checked only if the merged batch still checks one.
                    contiguous && (expected_root.is_some() || root.is_none())
                });
                if joins {
                    let (have, root) = pending.as_mut().expect("pending");
                    have.extend(entries);
                    *root = expected_root;
                } else {
                    flush(&mut out, &mut pending, &mut held);
                    pending = Some((entries, expected_root));
                }
            }
            send @ Command::Send { .. } if pending.is_some() => held.push(send),
            other => {
                flush(&mut out, &mut pending, &mut held);
                out.push(other);
            }
        }
    }
    flush(&mut out, &mut pending, &mut held);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ledger_replication::{EpochHistory, Head, NodeId};

    fn entry(seq: u64) -> Entry {
        Entry::new(
            format!("id-{seq}"),
            "facts".into(),
            vec![seq as u8],
            seq,
            seq,
            Default::default(),
            seq,
        )
    }

    fn append(from: u64, to: u64, root: u8) -> Command<Entry> {
        Command::Append {
            entries: (from..=to).map(entry).collect(),
            expected_root: Some(Hash([root; 32])),
        }
    }

    fn cursor(to: &str, size: u64) -> Command<Entry> {
        Command::Send {
            to: NodeId::from(to),
            message: Message::Cursor(Head {
                promised: None,
                size,
                history: EpochHistory::default(),
                commit_index: 0,
            }),
        }
    }

    fn shape(cmds: &[Command<Entry>]) -> Vec<String> {
        cmds.iter()
            .map(|c| match c {
                Command::Append {
                    entries,
                    expected_root,
                } => format!(
                    "append {}..{} root {}",
                    entries[0].sequence,
                    entries.last().unwrap().sequence,
                    expected_root.map_or(0, |r| r.as_bytes()[0])
                ),
                Command::Send {
                    to,
                    message: Message::Cursor(h),
                } => format!("cursor {to} {}", h.size),
                Command::SaveState(_) => "save".into(),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn consecutive_batches_are_stored_at_once_and_answered_with_the_last_cursor() {
        let cmds = vec![
            append(1, 2, 1),
            cursor("w", 2),
            append(3, 5, 2),
            cursor("w", 5),
            append(6, 6, 3),
            cursor("w", 6),
        ];
        assert_eq!(shape(&coalesce(cmds)), ["append 1..6 root 3", "cursor w 6"]);
    }

    #[test]
    fn storage_commands_and_gaps_keep_their_place() {
        let cmds = vec![
            append(1, 2, 1),
            cursor("w", 2),
            Command::SaveState(Default::default()),
            append(3, 3, 2),
            cursor("w", 3),
            append(5, 5, 3), // not contiguous: its own write
            cursor("w", 5),
            cursor("x", 5),
        ];
        assert_eq!(
            shape(&coalesce(cmds)),
            [
                "append 1..2 root 1",
                "cursor w 2",
                "save",
                "append 3..3 root 2",
                "cursor w 3",
                "append 5..5 root 3",
                "cursor w 5",
                "cursor x 5"
            ]
        );
    }
}
